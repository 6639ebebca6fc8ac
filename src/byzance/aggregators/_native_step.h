/* A weighted step from a point over the rows of an (n, d) row-major matrix:
 * out = v + (1 / div) sum_r w[r] (x[r] - v). Centered clipping's update (w
 * the clipping scales, div = n, v the center) and the average (w = 1, div =
 * n, no v), in one pass that also reports whether the result is finite, so
 * that neither rule makes a pass of its own to look for NaN, inf or an
 * overflowed sum. Included by _native_select.c once per dtype, inside its
 * BYZ_T/BYZ_NAME template (no include guard).
 *
 * Blocks of STEP_LANES columns, their float64 sums held in registers while
 * the rows go past (each row's next block prefetched). float32 rows are summed
 * in float32 lanes in runs of STEP_RUN rows, and each run's sum is added into
 * the float64 sums (as the distances kernel sums its runs): at most STEP_RUN
 * float32 roundings per term, against up to n for a running float32 sum, and
 * a quarter of the float64 work. A run that overflows makes its output
 * infinite, which the flag reports (the callers then take their float64 or
 * torch paths, as for any overflow). float64 rows are summed directly. */

#ifndef STEP_LANES
#define STEP_LANES 16 /* columns per block: four vectors of float64 sums, kept in registers */
#define STEP_AHEAD 8  /* how many blocks ahead the loop prefetches each row */
#define STEP_RUN 8     /* float32 rows summed in float32 before their float64 sums */
#define STEP_PANEL_BYTES (1 << 17) /* byz_step_distances: columns of all rows read twice, in L2 */
#define STEP_PANEL_MIN 256         /* its narrowest panel (columns); narrower: one panel, two passes */
typedef double byz_f64x4 __attribute__((vector_size(32)));
typedef float byz_f32x8 __attribute__((vector_size(32)));
typedef float byz_f32x4 __attribute__((vector_size(16)));

/* Lanes at .. at + 3 of s as float64. */
static inline byz_f64x4 step_widen(byz_f32x8 s, int at) {
  byz_f32x4 h;
  memcpy(&h, (const float *)&s + at, sizeof h);
  return __builtin_convertvector(h, byz_f64x4);
}
#endif

typedef BYZ_T BYZ_NAME(byz_t4) __attribute__((vector_size(4 * sizeof(BYZ_T))));
typedef BYZ_K BYZ_NAME(byz_k4) __attribute__((vector_size(4 * sizeof(BYZ_K))));

/* Four values of p as float64. */
static inline byz_f64x4 BYZ_NAME(step_load)(const BYZ_T *p) {
  BYZ_NAME(byz_t4) q;
  memcpy(&q, p, sizeof q);
  return __builtin_convertvector(q, byz_f64x4);
}

/* Four float64 results into out in its dtype; lanes of *bad set where one is NaN or inf. */
static inline void BYZ_NAME(step_store)(BYZ_T *out, byz_f64x4 r, BYZ_NAME(byz_k4) *bad) {
  BYZ_NAME(byz_t4) o = __builtin_convertvector(r, BYZ_NAME(byz_t4));
  memcpy(out, &o, sizeof o);
  *bad |= (o - o) != 0; /* o - o: 0 for a finite value, NaN otherwise */
}

/* A power of two that brings the largest of the n weights into [0.5, 1) (1 for none): the
 * weights times it, and div with them (both exact), keep a weight's bits in float32 lanes
 * however small it is. */
static double BYZ_NAME(step_weight_scale)(const double *w, int64_t n) {
  double wmax = 0.0;
  for (int64_t r = 0; w && r < n; r++) wmax = fabs(w[r]) > wmax ? fabs(w[r]) : wmax;
  if (!(wmax > 0.0 && isfinite(wmax))) return 1.0;
  int e;
  frexp(wmax, &e);
  return ldexp(1.0, -e);
}

/* byz_weighted_step over columns c0 .. c1 - 1 with the weights' scale given. */
static int BYZ_NAME(step_columns)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int64_t c1,
                                  const double *w, double wscale, double div, const BYZ_T *v,
                                  BYZ_T *out) {
  BYZ_NAME(byz_k4) lanes = {0}; /* where an output was NaN or infinite */
  int bad = 0;
  const double denom = div * wscale;
#if BYZ_BITS == 32
  /* A product by 1 / denom: within 2 float64 ulps of the quotient, far below a float32 ulp,
   * where a division per value would cost as much as the rest at small n. */
  const double scale = 1.0 / denom;
#define STEP_DIVIDE(a) ((a) * scale)
#else
#define STEP_DIVIDE(a) ((a) / denom)
#endif
  int64_t c = c0;
  for (; c + STEP_LANES <= c1; c += STEP_LANES) {
    byz_f64x4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, z0 = {0}, z1 = {0}, z2 = {0}, z3 = {0};
    if (v) {
      z0 = BYZ_NAME(step_load)(v + c);
      z1 = BYZ_NAME(step_load)(v + c + 4);
      z2 = BYZ_NAME(step_load)(v + c + 8);
      z3 = BYZ_NAME(step_load)(v + c + 12);
    }
    const BYZ_T *p = x + c;
#if BYZ_BITS == 32
    /* Runs of STEP_RUN rows summed in float32 lanes, then added into the float64 sums. */
    byz_f32x8 y0 = {0}, y1 = {0};
    if (v) {
      memcpy(&y0, v + c, 32);
      memcpy(&y1, v + c + 8, 32);
    }
    for (int64_t r0 = 0; r0 < n; r0 += STEP_RUN) {
      int64_t r1 = n - r0 < STEP_RUN ? n : r0 + STEP_RUN;
      byz_f32x8 s0 = {0}, s1 = {0};
      for (int64_t r = r0; r < r1; r++, p += ld) {
        __builtin_prefetch(p + STEP_AHEAD * STEP_LANES);
        byz_f32x8 e0, e1;
        memcpy(&e0, p, 32);
        memcpy(&e1, p + 8, 32);
        if (v) {
          e0 -= y0;
          e1 -= y1;
        }
        if (w) {
          float wr = (float)(w[r] * wscale);
          e0 *= wr;
          e1 *= wr;
        }
        s0 += e0;
        s1 += e1;
      }
      a0 += step_widen(s0, 0);
      a1 += step_widen(s0, 4);
      a2 += step_widen(s1, 0);
      a3 += step_widen(s1, 4);
    }
#else
    for (int64_t r = 0; r < n; r++, p += ld) {
      __builtin_prefetch(p + STEP_AHEAD * STEP_LANES);
      byz_f64x4 e0, e1, e2, e3;
      memcpy(&e0, p, 32);
      memcpy(&e1, p + 4, 32);
      memcpy(&e2, p + 8, 32);
      memcpy(&e3, p + 12, 32);
      if (v) {
        e0 -= z0;
        e1 -= z1;
        e2 -= z2;
        e3 -= z3;
      }
      if (w) {
        double wr = w[r] * wscale;
        e0 *= wr;
        e1 *= wr;
        e2 *= wr;
        e3 *= wr;
      }
      a0 += e0;
      a1 += e1;
      a2 += e2;
      a3 += e3;
    }
#endif
    BYZ_NAME(step_store)(out + c, z0 + STEP_DIVIDE(a0), &lanes);
    BYZ_NAME(step_store)(out + c + 4, z1 + STEP_DIVIDE(a1), &lanes);
    BYZ_NAME(step_store)(out + c + 8, z2 + STEP_DIVIDE(a2), &lanes);
    BYZ_NAME(step_store)(out + c + 12, z3 + STEP_DIVIDE(a3), &lanes);
  }
  for (; c < c1; c++) { /* the last columns, fewer than a block */
    double a = 0.0, z = v ? (double)v[c] : 0.0;
    for (int64_t r = 0; r < n; r++) a += (w ? w[r] * wscale : 1.0) * ((double)x[r * ld + c] - z);
    BYZ_T o = (BYZ_T)(z + STEP_DIVIDE(a));
    out[c] = o;
    bad |= !(o - o == 0);
  }
  return bad || lanes[0] || lanes[1] || lanes[2] || lanes[3];
}

#undef STEP_DIVIDE

/* out[j] for columns c0 .. c1 - 1, as above; w NULL for all ones, v NULL for zero.
 * Returns 1 when an output is NaN or infinite, else 0. */
int BYZ_NAME(byz_weighted_step)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int64_t c1,
                                const double *w, double div, const BYZ_T *v, BYZ_T *out) {
  double wscale = BYZ_NAME(step_weight_scale)(w, n);
  return BYZ_NAME(step_columns)(x, n, ld, c0, c1, w, wscale, div, v, out);
}

/* byz_weighted_step over columns c0 .. c1 - 1, and sq[r] += sum over those columns of
 * (x[r, j] - out[j])^2 for every row r (the squared distances to the result, summed as
 * byz_sq_distances sums them): each panel of columns is read from memory once, for its
 * step, and then again from the cache for its distances, so that a Weiszfeld iteration
 * (the weighted mean, then the distances to it) costs one pass over memory instead of two. */
int BYZ_NAME(byz_step_distances)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int64_t c1,
                                 const double *w, double div, const BYZ_T *v, BYZ_T *out,
                                 double *sq) {
  double wscale = BYZ_NAME(step_weight_scale)(w, n);
  int64_t panel = STEP_PANEL_BYTES / (n * (int64_t)sizeof(BYZ_T)) / STEP_LANES * STEP_LANES;
  if (panel < STEP_PANEL_MIN) /* many rows: short rows of a panel would cost more than a pass */
    panel = c1 - c0;
  int bad = 0;
  for (int64_t c = c0; c < c1; c += panel) {
    int64_t e = c1 - c < panel ? c1 : c + panel;
    bad |= BYZ_NAME(step_columns)(x, n, ld, c, e, w, wscale, div, v, out);
    BYZ_NAME(sq_distances_add)(x + c, ld, 0, n, e - c, out + c, sq);
  }
  return bad;
}
