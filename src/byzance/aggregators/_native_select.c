/* Coordinate-wise order statistics of an (n, d) row-major matrix by radix
 * descent over the float bits, one cache-resident block of columns at a time.
 *
 * Built and loaded by byzance/aggregators/_native.py (see its docstring for
 * why this is C, how it is compiled and what it falls back to).
 *
 * Every value v maps to an integer key whose order is the float order (a
 * negative value has all its non-sign bits flipped): key(v) < key(w) iff
 * v < w, with -0.0 just below +0.0 (which the sort treats as equal: either is
 * a valid sorted order). The k-th smallest key of a column is built bit by bit
 * from the top (radix descent): a bit is set when fewer than k keys lie below
 * the prefix with that bit set. Each step is one counting pass over the
 * column's n values; a block of BYZ_B columns (n x BYZ_B keys) stays in the
 * L1/L2 cache for all of its passes, and the counting loop runs over the
 * block's columns in SIMD lanes. The answer is a key of the data, so the
 * value is exact. Bits above the highest bit where a column's smallest and
 * largest keys differ are known before the first pass and skipped.
 *
 * Columns left to the caller are flagged in `bad`: BYZ_BAD_NONFINITE for a
 * NaN or an infinity (which also tells the caller a row is non-finite, with no
 * pass of its own), BYZ_BAD_TIE for a tie the kernel cannot decide. The statistics mirror byzance/aggregators/_select.py's formulas in
 * the same dtype and order of operations (compiled with -ffp-contract=off).
 */
#ifndef BYZ_T

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BYZ_BAD_TIE 1
#define BYZ_BAD_NONFINITE 2

#define BYZ_T float
#define BYZ_K int32_t
#define BYZ_U uint32_t
#define BYZ_BITS 32
#define BYZ_B 32
#define BYZ_EXP 0x7F800000u
#define BYZ_NAME(name) name##_f32
#include __FILE__
#undef BYZ_T
#undef BYZ_K
#undef BYZ_U
#undef BYZ_BITS
#undef BYZ_B
#undef BYZ_EXP
#undef BYZ_NAME

#define BYZ_T double
#define BYZ_K int64_t
#define BYZ_U uint64_t
#define BYZ_BITS 64
#define BYZ_B 16
#define BYZ_EXP 0x7FF0000000000000ull
#define BYZ_NAME(name) name##_f64
#include __FILE__

int byz_native_abi(void) { return 1; }

#else /* one dtype's kernels */

#define KMAX ((BYZ_K)((((BYZ_U)1) << (BYZ_BITS - 1)) - 1))
#define SIGN (((BYZ_U)1) << (BYZ_BITS - 1))

static inline BYZ_K BYZ_NAME(key)(BYZ_T v) {
  BYZ_K b;
  memcpy(&b, &v, sizeof b);
  return b ^ ((b >> (BYZ_BITS - 1)) & KMAX);
}

static inline BYZ_T BYZ_NAME(value)(BYZ_K s) {
  BYZ_K b = s ^ ((s >> (BYZ_BITS - 1)) & KMAX);
  BYZ_T v;
  memcpy(&v, &b, sizeof v);
  return v;
}

/* Keys of columns c0 .. c0 + w - 1 into blk (n x BYZ_B; padding columns get
 * KMAX), their smallest and largest keys, and whether each is all finite. */
static void BYZ_NAME(load)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int w,
                           BYZ_K *blk, BYZ_K *kmin, BYZ_K *kmax, uint8_t *nonfinite) {
  BYZ_U nf[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    kmin[j] = KMAX;
    kmax[j] = -KMAX - 1;
    nf[j] = 0;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_T *row = x + r * ld + c0;
    BYZ_K *br = blk + r * BYZ_B;
    /* The next block's part of this row: n strided streams defeat the hardware prefetcher. */
    __builtin_prefetch(row + BYZ_B);
    __builtin_prefetch(row + BYZ_B + 64 / sizeof(BYZ_T));
    const BYZ_T *src = row;
    BYZ_T pad[BYZ_B]; /* a partial last block: the missing columns read as KMAX's value */
    if (w < BYZ_B) {
      memcpy(pad, row, (size_t)w * sizeof(BYZ_T));
      for (int j = w; j < BYZ_B; j++) pad[j] = BYZ_NAME(value)(KMAX);
      src = pad;
    }
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K b;
      memcpy(&b, &src[j], sizeof b);
      nf[j] |= (BYZ_U)(((BYZ_U)b & BYZ_EXP) == BYZ_EXP);
      BYZ_K k = b ^ ((b >> (BYZ_BITS - 1)) & KMAX);
      br[j] = k;
      kmin[j] = k < kmin[j] ? k : kmin[j];
      kmax[j] = k > kmax[j] ? k : kmax[j];
    }
  }
  for (int j = 0; j < w; j++) nonfinite[j] = nf[j] ? BYZ_BAD_NONFINITE : 0;
}

/* Highest bit where some column's smallest and largest keys differ (-1 if none). */
static int BYZ_NAME(top_bit)(const BYZ_K *kmin, const BYZ_K *kmax, int w) {
  BYZ_U diff = 0;
  for (int j = 0; j < w; j++) diff |= (BYZ_U)kmin[j] ^ (BYZ_U)kmax[j];
  return diff ? BYZ_BITS - 1 - (BYZ_BITS == 32 ? __builtin_clz((unsigned)diff)
                                               : __builtin_clzll((unsigned long long)diff))
              : -1;
}

/* A descent's start: each column's prefix (the bits above the highest bit where
 * some column's smallest and largest keys differ), no key below it and all n
 * below its upper end (padding columns: a closed interval). Returns that bit. */
static int BYZ_NAME(start)(int64_t n, int w, const BYZ_K *kmin, const BYZ_K *kmax, BYZ_U *pre,
                           BYZ_K *below, BYZ_K *upto) {
  int top = BYZ_NAME(top_bit)(kmin, kmax, w);
  BYZ_U keep = top + 1 >= BYZ_BITS ? 0 : ~((((BYZ_U)1) << (top + 1)) - 1);
  for (int j = 0; j < BYZ_B; j++) {
    pre[j] = ((BYZ_U)kmin[j] ^ SIGN) & keep;
    below[j] = 0;
    upto[j] = j < w ? (BYZ_K)n : 1;
  }
  return top;
}

/* A descent's last pass: the smallest key at or above each column's prefix. */
static void BYZ_NAME(first_from)(const BYZ_K *blk, int64_t n, int w, const BYZ_U *pre,
                                 BYZ_K *out) {
  BYZ_K lo[BYZ_B], best[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    lo[j] = (BYZ_K)(pre[j] ^ SIGN);
    best[j] = KMAX;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K v = br[j] >= lo[j] ? br[j] : KMAX;
      best[j] = v < best[j] ? v : best[j];
    }
  }
  for (int j = 0; j < w; j++) out[j] = best[j];
}

/* A plain descent's last pass: each column's smallest key at or above its
 * prefix when the rank sought is the first of its interval (k == below),
 * else its largest key at or below the interval's upper end (the last). */
static void BYZ_NAME(end_of_interval)(const BYZ_K *blk, int64_t n, int w, const BYZ_U *pre,
                                      BYZ_U span, const BYZ_K *below, BYZ_K k, BYZ_K *out) {
  BYZ_K lo[BYZ_B], hi[BYZ_B], least[BYZ_B], most[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    lo[j] = (BYZ_K)(pre[j] ^ SIGN);
    hi[j] = (BYZ_K)((pre[j] | span) ^ SIGN);
    least[j] = KMAX;
    most[j] = -KMAX - 1;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K v = br[j];
      BYZ_K a = v >= lo[j] ? v : KMAX;
      BYZ_K b = v <= hi[j] ? v : -KMAX - 1;
      least[j] = a < least[j] ? a : least[j];
      most[j] = b > most[j] ? b : most[j];
    }
  }
  for (int j = 0; j < w; j++) out[j] = below[j] == k ? least[j] : most[j];
}

/* The (k + 1)-th smallest key of every column of blk (0-based rank k), by
 * radix descent from the highest bit where some column's smallest and largest
 * keys differ. The descent keeps, per column, the counts of keys below the
 * prefix (below) and below the prefix's upper end (upto). It stops once the
 * rank sought is the first or the last of every column's interval (below == k
 * or upto == k + 1): one side's nearest neighbour split off suffices, where a
 * single key left in the interval needs both (on smooth data about 3 fewer
 * passes of the 15-18 that the worst of a block's columns takes). A last pass
 * then takes the smallest or the largest key of each interval. */
static void BYZ_NAME(descend_one)(const BYZ_K *blk, int64_t n, int w, const BYZ_K *kmin,
                                  const BYZ_K *kmax, int64_t k, BYZ_K *out) {
  if (k == 0 || k == n - 1) { /* the smallest or largest key */
    for (int j = 0; j < w; j++) out[j] = k == 0 ? kmin[j] : kmax[j];
    return;
  }
  BYZ_U pre[BYZ_B];
  BYZ_K below[BYZ_B], upto[BYZ_B], rank = (BYZ_K)k;
  int bit = BYZ_NAME(start)(n, w, kmin, kmax, pre, below, upto);
  for (; bit >= 0; bit--) {
    int open = 0;
    for (int j = 0; j < BYZ_B; j++) open |= (below[j] < rank) & (rank < upto[j] - 1);
    if (!open) break;
    BYZ_U step = ((BYZ_U)1) << bit;
    BYZ_K cut[BYZ_B], cnt[BYZ_B];
    for (int j = 0; j < BYZ_B; j++) {
      cut[j] = (BYZ_K)((pre[j] | step) ^ SIGN);
      cnt[j] = 0;
    }
    for (int64_t r = 0; r < n; r++) {
      const BYZ_K *br = blk + r * BYZ_B;
      for (int j = 0; j < BYZ_B; j++) cnt[j] += br[j] < cut[j];
    }
    for (int j = 0; j < BYZ_B; j++) {
      int up = cnt[j] <= rank;
      pre[j] = up ? pre[j] | step : pre[j];
      below[j] = up ? cnt[j] : below[j];
      upto[j] = up ? upto[j] : cnt[j];
    }
  }
  /* Bits above `bit` are decided: the interval is pre .. pre | span. */
  BYZ_U span = bit + 1 >= BYZ_BITS ? ~(BYZ_U)0 : (((BYZ_U)1) << (bit + 1)) - 1;
  BYZ_NAME(end_of_interval)(blk, n, w, pre, span, below, rank, out);
}

/* Two ranks k0 and k1 (pass k1 = -1 for one). */
static void BYZ_NAME(descend)(const BYZ_K *blk, int64_t n, int w, const BYZ_K *kmin,
                              const BYZ_K *kmax, int64_t k0, int64_t k1, BYZ_K *out0,
                              BYZ_K *out1) {
  BYZ_NAME(descend_one)(blk, n, w, kmin, kmax, k0, out0);
  if (k1 >= 0) BYZ_NAME(descend_one)(blk, n, w, kmin, kmax, k1, out1);
}

/* Median of every column (the mean of the two middle values for even n):
 * halves first, as median_of_sorted. */
static void BYZ_NAME(median_block)(const BYZ_K *blk, int64_t n, int w, const BYZ_K *kmin,
                                   const BYZ_K *kmax, BYZ_T *med) {
  BYZ_K lower[BYZ_B];
  if (n % 2) {
    BYZ_NAME(descend)(blk, n, w, kmin, kmax, n / 2, -1, lower, NULL);
    for (int j = 0; j < w; j++) med[j] = BYZ_NAME(value)(lower[j]);
    return;
  }
  BYZ_NAME(descend)(blk, n, w, kmin, kmax, n / 2 - 1, -1, lower, NULL);
  /* The next value: the same one if it is repeated, else the smallest key above it. */
  BYZ_K at_most[BYZ_B], above[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    at_most[j] = 0;
    above[j] = KMAX;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K k = br[j];
      at_most[j] += k <= lower[j];
      BYZ_K a = k > lower[j] ? k : KMAX;
      above[j] = a < above[j] ? a : above[j];
    }
  }
  for (int j = 0; j < w; j++) {
    BYZ_T lo = BYZ_NAME(value)(lower[j]);
    BYZ_T hi = at_most[j] > n / 2 ? lo : BYZ_NAME(value)(above[j]);
    med[j] = lo * (BYZ_T)0.5 + hi * (BYZ_T)0.5;
  }
}

int BYZ_NAME(byz_median)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int64_t c1,
                         BYZ_T *out, uint8_t *bad) {
  BYZ_K *blk = malloc((size_t)n * BYZ_B * sizeof(BYZ_K));
  if (!blk) return -1;
  BYZ_K kmin[BYZ_B], kmax[BYZ_B];
  BYZ_T med[BYZ_B];
  for (int64_t c = c0; c < c1; c += BYZ_B) {
    int w = (int)(c1 - c < BYZ_B ? c1 - c : BYZ_B);
    BYZ_NAME(load)(x, n, ld, c, w, blk, kmin, kmax, bad + c);
    BYZ_NAME(median_block)(blk, n, w, kmin, kmax, med);
    for (int j = 0; j < w; j++) out[c + j] = med[j];
  }
  free(blk);
  return 0;
}

/* Mean of the values of ranks trim + 1 .. n - trim: the values strictly between
 * the two order statistics a and b, plus a and b times their multiplicities
 * inside the window (as _select.select_trimmed_mean). */
int BYZ_NAME(byz_trimmed_mean)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0, int64_t c1,
                               int64_t trim, BYZ_T *out, uint8_t *bad) {
  BYZ_K *blk = malloc((size_t)n * BYZ_B * sizeof(BYZ_K));
  if (!blk) return -1;
  BYZ_K kmin[BYZ_B], kmax[BYZ_B], ka[BYZ_B], kb[BYZ_B];
  int64_t keep = n - 2 * trim;
  for (int64_t c = c0; c < c1; c += BYZ_B) {
    int w = (int)(c1 - c < BYZ_B ? c1 - c : BYZ_B);
    BYZ_NAME(load)(x, n, ld, c, w, blk, kmin, kmax, bad + c);
    BYZ_NAME(descend)(blk, n, w, kmin, kmax, trim, n - trim - 1, ka, kb);
    BYZ_T a[BYZ_B], b[BYZ_B], inner[BYZ_B];
    BYZ_K le_a[BYZ_B], lt_b[BYZ_B];
    for (int j = 0; j < BYZ_B; j++) {
      if (j >= w) ka[j] = kb[j] = 0;
      a[j] = BYZ_NAME(value)(ka[j]);
      b[j] = BYZ_NAME(value)(kb[j]);
      inner[j] = 0;
      le_a[j] = 0;
      lt_b[j] = 0;
    }
    /* Compared as keys: they differ from the float order only between -0.0 and
     * +0.0, whose contributions to the sum are zero either way. */
    for (int64_t r = 0; r < n; r++) {
      const BYZ_K *br = blk + r * BYZ_B;
      for (int j = 0; j < BYZ_B; j++) {
        BYZ_K kk = br[j];
        BYZ_T v = BYZ_NAME(value)(kk);
        BYZ_K inside = (BYZ_K)(kk > ka[j]) & (BYZ_K)(kk < kb[j]);
        inner[j] += inside ? v : (BYZ_T)0;
        le_a[j] += kk <= ka[j];
        lt_b[j] += kk < kb[j];
      }
    }
    for (int j = 0; j < w; j++) {
      BYZ_T low = (BYZ_T)(le_a[j] - trim);
      BYZ_T high = (BYZ_T)(n - trim - lt_b[j]);
      BYZ_T total = a[j] == b[j] ? a[j] * (BYZ_T)keep : inner[j] + a[j] * low + b[j] * high;
      out[c + j] = total / (BYZ_T)keep;
    }
  }
  free(blk);
  return 0;
}

/* Mean of the k values closest to the median (as _select.select_mean_around_median):
 * the k-th smallest distance D by a second descent over the distances' keys,
 * then the values nearer than D and the ties at D, those below the median
 * first. A partly taken tie of distinct values is flagged in bad (the caller's
 * sort decides it). */
int BYZ_NAME(byz_mean_around_median)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0,
                                     int64_t c1, int64_t k, BYZ_T *out, uint8_t *bad) {
  BYZ_K *blk = malloc((size_t)n * BYZ_B * sizeof(BYZ_K) * 2);
  if (!blk) return -1;
  BYZ_K *dist = blk + (size_t)n * BYZ_B;
  BYZ_K kmin[BYZ_B], kmax[BYZ_B], dmin[BYZ_B], dmax[BYZ_B], kd[BYZ_B];
  BYZ_T med[BYZ_B];
  for (int64_t c = c0; c < c1; c += BYZ_B) {
    int w = (int)(c1 - c < BYZ_B ? c1 - c : BYZ_B);
    BYZ_NAME(load)(x, n, ld, c, w, blk, kmin, kmax, bad + c);
    BYZ_NAME(median_block)(blk, n, w, kmin, kmax, med);
    for (int j = w; j < BYZ_B; j++) med[j] = 0;
    for (int j = 0; j < BYZ_B; j++) {
      dmin[j] = KMAX;
      dmax[j] = -KMAX - 1;
    }
    for (int64_t r = 0; r < n; r++) {
      const BYZ_K *br = blk + r * BYZ_B;
      BYZ_K *dr = dist + r * BYZ_B;
      for (int j = 0; j < BYZ_B; j++) {
        BYZ_T v = BYZ_NAME(value)(br[j]);
        BYZ_T dv = v <= med[j] ? med[j] - v : v - med[j];
        BYZ_K kk = BYZ_NAME(key)(dv);
        dr[j] = kk;
        dmin[j] = kk < dmin[j] ? kk : dmin[j];
        dmax[j] = kk > dmax[j] ? kk : dmax[j];
      }
    }
    BYZ_NAME(descend)(dist, n, w, dmin, dmax, k - 1, -1, kd, NULL);
    BYZ_T d[BYZ_B], near_sum[BYZ_B], low_sum[BYZ_B], high_sum[BYZ_B];
    BYZ_T low_min[BYZ_B], low_max[BYZ_B], high_min[BYZ_B], high_max[BYZ_B];
    BYZ_K near[BYZ_B], tie_low[BYZ_B], tie_high[BYZ_B];
    for (int j = 0; j < BYZ_B; j++) {
      d[j] = j < w ? BYZ_NAME(value)(kd[j]) : 0;
      near_sum[j] = low_sum[j] = high_sum[j] = 0;
      low_min[j] = high_min[j] = (BYZ_T)INFINITY;
      low_max[j] = high_max[j] = -(BYZ_T)INFINITY;
      near[j] = tie_low[j] = tie_high[j] = 0;
    }
    for (int64_t r = 0; r < n; r++) {
      const BYZ_K *br = blk + r * BYZ_B;
      for (int j = 0; j < BYZ_B; j++) {
        BYZ_T v = BYZ_NAME(value)(br[j]);
        BYZ_K low = (BYZ_K)(v <= med[j]);
        BYZ_T dv = low ? med[j] - v : v - med[j];
        BYZ_K is_near = (BYZ_K)(dv < d[j]);
        BYZ_K tie = (BYZ_K)(dv == d[j]);
        BYZ_K tl = tie & low;
        BYZ_K th = tie & (low ^ 1);
        near_sum[j] += is_near ? v : (BYZ_T)0;
        near[j] += is_near;
        low_sum[j] += tl ? v : (BYZ_T)0;
        high_sum[j] += th ? v : (BYZ_T)0;
        tie_low[j] += tl;
        tie_high[j] += th;
        BYZ_T lv = tl ? v : (BYZ_T)INFINITY;
        BYZ_T lx = tl ? v : -(BYZ_T)INFINITY;
        BYZ_T hv = th ? v : (BYZ_T)INFINITY;
        BYZ_T hx = th ? v : -(BYZ_T)INFINITY;
        low_min[j] = lv < low_min[j] ? lv : low_min[j];
        low_max[j] = lx > low_max[j] ? lx : low_max[j];
        high_min[j] = hv < high_min[j] ? hv : high_min[j];
        high_max[j] = hx > high_max[j] ? hx : high_max[j];
      }
    }
    for (int j = 0; j < w; j++) {
      BYZ_K need = (BYZ_K)k - near[j];
      BYZ_K take_low = tie_low[j] < need ? tie_low[j] : need;
      BYZ_K take_high = need - take_low;
      BYZ_T low_part = take_low == tie_low[j] ? low_sum[j] : (BYZ_T)take_low * low_max[j];
      BYZ_T high_part = take_high == tie_high[j] ? high_sum[j]
                        : take_high == 0        ? (BYZ_T)0
                                                : (BYZ_T)take_high * high_min[j];
      out[c + j] = (near_sum[j] + low_part + high_part) / (BYZ_T)k;
      int undecided = (take_low < tie_low[j] && take_low > 0 && low_min[j] != low_max[j]) ||
                      (take_high < tie_high[j] && take_high > 0 && high_min[j] != high_max[j]);
      if (undecided) bad[c + j] |= BYZ_BAD_TIE;
    }
  }
  free(blk);
  return 0;
}

/* For every column, the largest key p with sum(weight, key < p) < target
 * (strict) or <= target (not strict), by radix descent as descend_one, with
 * row weights in place of counts. The descent keeps the invariant that the
 * keys below the prefix weigh under the target and those below the
 * interval's upper end do not, so once an interval holds a single key that
 * key is the answer (a zero-weight key cannot be: it would break the
 * invariant). Leaves each column's prefix in pre and the weight of the keys
 * below its interval's upper end in wupto (total: the weight of all rows);
 * returns the bit it stopped at (the interval is pre .. pre | span(bit)). */
static int BYZ_NAME(weighted_descend)(const BYZ_K *blk, int64_t n, int w, const BYZ_K *kmin,
                                      const BYZ_K *kmax, const double *weight, double target,
                                      int strict, double total, BYZ_U *pre, double *wupto) {
  BYZ_K below[BYZ_B], upto[BYZ_B]; /* keys below the prefix, below its upper end */
  int bit = BYZ_NAME(start)(n, w, kmin, kmax, pre, below, upto);
  for (int j = 0; j < BYZ_B; j++) wupto[j] = total;
  for (; bit >= 0; bit--) {
    int open = 0;
    for (int j = 0; j < BYZ_B; j++) open |= upto[j] - below[j] > 1;
    if (!open) break;
    BYZ_U step = ((BYZ_U)1) << bit;
    BYZ_K cut[BYZ_B], cnt[BYZ_B];
    double sum[BYZ_B];
    for (int j = 0; j < BYZ_B; j++) {
      cut[j] = (BYZ_K)((pre[j] | step) ^ SIGN);
      cnt[j] = 0;
      sum[j] = 0.0;
    }
    for (int64_t r = 0; r < n; r++) {
      const BYZ_K *br = blk + r * BYZ_B;
      double wr = weight[r];
      for (int j = 0; j < BYZ_B; j++) {
        cnt[j] += br[j] < cut[j];
        sum[j] += br[j] < cut[j] ? wr : 0.0;
      }
    }
    for (int j = 0; j < BYZ_B; j++) {
      int up = strict ? sum[j] < target : sum[j] <= target;
      pre[j] = up ? pre[j] | step : pre[j];
      below[j] = up ? cnt[j] : below[j];
      upto[j] = up ? upto[j] : cnt[j];
      wupto[j] = up ? wupto[j] : sum[j];
    }
  }
  return bit;
}

/* The lower and upper keys of the weighted median (see byz_weighted_median).
 * With no tiny weight (0 < w <= 2 (hi - lo)), one descent: the lower key p is
 * the single key of its final interval and wupto the weight of the keys up to
 * p; the upper key is p when that weight exceeds hi, else the next key of
 * positive weight (a zero-weight key is never chosen, and the next positive
 * one lifts the weight above lo + 2 (hi - lo) > hi), found in the same last
 * pass as p. With a tiny weight, a second descent to hi. */
static void BYZ_NAME(weighted_keys)(const BYZ_K *blk, int64_t n, int w, const BYZ_K *kmin,
                                    const BYZ_K *kmax, const double *weight, double lo,
                                    double hi, double total, int tiny, BYZ_K *ka, BYZ_K *kb) {
  BYZ_U pre[BYZ_B];
  double wupto[BYZ_B];
  int bit = BYZ_NAME(weighted_descend)(blk, n, w, kmin, kmax, weight, lo, 1, total, pre, wupto);
  if (tiny) {
    BYZ_NAME(first_from)(blk, n, w, pre, ka);
    BYZ_NAME(weighted_descend)(blk, n, w, kmin, kmax, weight, hi, 0, total, pre, wupto);
    BYZ_NAME(first_from)(blk, n, w, pre, kb);
    return;
  }
  BYZ_U span = bit + 1 >= BYZ_BITS ? ~(BYZ_U)0 : (((BYZ_U)1) << (bit + 1)) - 1;
  BYZ_K from[BYZ_B], last[BYZ_B], least[BYZ_B], next[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    from[j] = (BYZ_K)(pre[j] ^ SIGN);
    last[j] = (BYZ_K)((pre[j] | span) ^ SIGN);
    least[j] = next[j] = KMAX;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B;
    BYZ_K positive = weight[r] > 0.0; /* a zero-weight row is never next */
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K v = br[j];
      BYZ_K a = v >= from[j] ? v : KMAX;
      BYZ_K b = positive & (v > last[j]) ? v : KMAX;
      least[j] = a < least[j] ? a : least[j];
      next[j] = b < next[j] ? b : next[j];
    }
  }
  for (int j = 0; j < w; j++) {
    ka[j] = least[j];
    kb[j] = wupto[j] > hi || next[j] == KMAX ? least[j] : next[j];
  }
}

/* Weighted median (as weights.weighted_median_of_columns): the midpoint of the
 * lower value (the first, in sorted order, whose cumulative weight reaches
 * lo = W/2 - slack) and the upper one (the first whose cumulative weight
 * exceeds hi = W/2 + slack): the largest p with sum(w, key < p) < lo, and the
 * largest with sum(w, key < p) <= hi. Weights are float64, one per row. */
int BYZ_NAME(byz_weighted_median)(const BYZ_T *x, int64_t n, int64_t ld, int64_t c0,
                                  int64_t c1, const double *weight, double lo, double hi,
                                  BYZ_T *out, uint8_t *bad) {
  BYZ_K *blk = malloc((size_t)n * BYZ_B * sizeof(BYZ_K));
  if (!blk) return -1;
  BYZ_K kmin[BYZ_B], kmax[BYZ_B], ka[BYZ_B], kb[BYZ_B];
  double total = 0.0;
  int tiny = 0;
  for (int64_t r = 0; r < n; r++) {
    total += weight[r];
    tiny |= weight[r] > 0.0 && weight[r] <= 2.0 * (hi - lo);
  }
  for (int64_t c = c0; c < c1; c += BYZ_B) {
    int w = (int)(c1 - c < BYZ_B ? c1 - c : BYZ_B);
    BYZ_NAME(load)(x, n, ld, c, w, blk, kmin, kmax, bad + c);
    BYZ_NAME(weighted_keys)(blk, n, w, kmin, kmax, weight, lo, hi, total, tiny, ka, kb);
    for (int j = 0; j < w; j++) {
      BYZ_T a = BYZ_NAME(value)(ka[j]);
      BYZ_T b = BYZ_NAME(value)(kb[j]);
      out[c + j] = a / (BYZ_T)2 + b / (BYZ_T)2;
    }
  }
  free(blk);
  return 0;
}

#undef KMAX
#undef SIGN
#endif
