/* The statistics of _native_select.c, one block of columns at a time: the
 * median, trimmed mean, mean around the median and weighted median of every
 * column, from the descents of _native_descent.h. Included by
 * _native_select.c once per dtype, inside its BYZ_T/BYZ_K/BYZ_NAME template
 * (no include guard); each *_cols function is a block_fn of its run. */

/* Median of every column (the mean of the two middle values for even n):
 * halves first, as median_of_sorted. */
static void BYZ_NAME(median_block)(const BYZ_NAME(block) *b, BYZ_T *med) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n;
  int w = b->w;
  BYZ_K lower[BYZ_B];
  if (n % 2) {
    BYZ_NAME(descend_one)(b, n / 2, lower);
    for (int j = 0; j < w; j++) med[j] = BYZ_NAME(value)(lower[j]);
    return;
  }
  BYZ_NAME(descend_one)(b, n / 2 - 1, lower);
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

/* A kernel's statistic of one block's columns (see run): into out, with bad
 * flagged for the columns it leaves to the caller; work (n x BYZ_B keys and
 * their n x 32 high halves) is a scratch for a second array of keys. */
static void BYZ_NAME(median_cols)(const BYZ_NAME(block) *b, const byz_params *p,
                                  BYZ_NAME(block) *work, BYZ_T *out, uint8_t *bad) {
  (void)p, (void)work, (void)bad;
  BYZ_T med[BYZ_B];
  BYZ_NAME(median_block)(b, med);
  for (int j = 0; j < b->w; j++) out[j] = med[j];
}

/* Mean of the values of ranks trim + 1 .. n - trim: the values strictly between
 * the two order statistics a and b, plus a and b times their multiplicities
 * inside the window (as _select.select_trimmed_mean). */
static void BYZ_NAME(trimmed_cols)(const BYZ_NAME(block) *blkp, const byz_params *p,
                                   BYZ_NAME(block) *work, BYZ_T *out, uint8_t *bad) {
  (void)work, (void)bad;
  const BYZ_K *blk = blkp->keys;
  int64_t n = blkp->n, trim = p->rank, keep = n - 2 * trim;
  int w = blkp->w;
  BYZ_K ka[BYZ_B], kb[BYZ_B];
  BYZ_NAME(descend_one)(blkp, trim, ka);
  BYZ_NAME(descend_one)(blkp, n - trim - 1, kb);
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
    out[j] = total / (BYZ_T)keep;
  }
}

/* meamed_cols' first pass over the values and their distances to the median:
 * the k-th smallest distance d, the sum of the values nearer than d, the
 * values at distance d below the median (low) and above it (high): their sums
 * and counts, and how many of each the window takes. */
typedef struct {
  BYZ_T d[BYZ_B], near_sum[BYZ_B], low_sum[BYZ_B], high_sum[BYZ_B];
  BYZ_K tie_low[BYZ_B], tie_high[BYZ_B], take_low[BYZ_B], take_high[BYZ_B];
} BYZ_NAME(window);

/* Whether a tie of `tie` values is partly taken (0 < take < tie). */
static inline int BYZ_NAME(partly)(BYZ_K take, BYZ_K tie) { return take < tie && take > 0; }

/* meamed_cols' columns where a tie at the distance d is partly taken: that
 * many copies of the largest tie below the median (the smallest above it),
 * flagged in bad when the tie holds distinct values (the caller's sort
 * decides those). A second pass, for the ties' smallest and largest values,
 * made only for blocks with such a column. */
static void BYZ_NAME(meamed_partial_ties)(const BYZ_NAME(block) *b, const BYZ_K *dist,
                                          const BYZ_T *med, const BYZ_NAME(window) *s,
                                          int64_t k, BYZ_T *out, uint8_t *bad) {
  BYZ_T low_min[BYZ_B], low_max[BYZ_B], high_min[BYZ_B], high_max[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    low_min[j] = high_min[j] = (BYZ_T)INFINITY;
    low_max[j] = high_max[j] = -(BYZ_T)INFINITY;
  }
  for (int64_t r = 0; r < b->n; r++) {
    const BYZ_K *br = b->keys + r * BYZ_B, *dr = dist + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_T v = BYZ_NAME(value)(br[j]);
      BYZ_K low = (BYZ_K)(v <= med[j]);
      BYZ_K tie = (BYZ_K)(BYZ_NAME(value)(dr[j]) == s->d[j]);
      BYZ_K tl = tie & low;
      BYZ_K th = tie & (low ^ 1);
      low_min[j] = tl && v < low_min[j] ? v : low_min[j];
      low_max[j] = tl && v > low_max[j] ? v : low_max[j];
      high_min[j] = th && v < high_min[j] ? v : high_min[j];
      high_max[j] = th && v > high_max[j] ? v : high_max[j];
    }
  }
  for (int j = 0; j < b->w; j++) {
    BYZ_K tl = s->take_low[j], th = s->take_high[j];
    int low_partly = BYZ_NAME(partly)(tl, s->tie_low[j]);
    int high_partly = BYZ_NAME(partly)(th, s->tie_high[j]);
    if (!low_partly && !high_partly) continue;
    BYZ_T low_part = tl == s->tie_low[j] ? s->low_sum[j] : (BYZ_T)tl * low_max[j];
    BYZ_T high_part = th == s->tie_high[j] ? s->high_sum[j]
                      : th == 0           ? (BYZ_T)0
                                          : (BYZ_T)th * high_min[j];
    out[j] = (s->near_sum[j] + low_part + high_part) / (BYZ_T)k;
    if ((low_partly && low_min[j] != low_max[j]) || (high_partly && high_min[j] != high_max[j]))
      bad[j] |= BYZ_BAD_TIE;
  }
}

/* Mean of the k values closest to the median (as _select.select_mean_around_median):
 * the k-th smallest distance D by a second descent over the distances' keys,
 * then the values nearer than D and the ties at D, those below the median
 * first. A partly taken tie of distinct values is flagged in bad (the caller's
 * sort decides it). */
static void BYZ_NAME(meamed_cols)(const BYZ_NAME(block) *b, const byz_params *p,
                                  BYZ_NAME(block) *work, BYZ_T *out, uint8_t *bad) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n, k = p->rank;
  int w = b->w;
  BYZ_K *dist = (BYZ_K *)work->keys;
  int16_t *dist_high = (int16_t *)work->high;
  BYZ_K dmin[BYZ_B], dmax[BYZ_B], kd[BYZ_B];
  BYZ_T med[BYZ_B];
  BYZ_NAME(median_block)(b, med);
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
#if BYZ_BITS == 32
    if (dist_high)
      for (int j = 0; j < 32; j++) dist_high[r * 32 + j] = (int16_t)(dr[j] >> 16);
#else
    (void)dist_high;
#endif
  }
  BYZ_NAME(block) distances = {dist, dmin, dmax, dist_high, b->low, n, w};
  BYZ_NAME(descend_one)(&distances, k - 1, kd);
  BYZ_NAME(window) s;
  BYZ_K near[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    s.d[j] = j < w ? BYZ_NAME(value)(kd[j]) : 0;
    s.near_sum[j] = s.low_sum[j] = s.high_sum[j] = 0;
    near[j] = s.tie_low[j] = s.tie_high[j] = 0;
  }
  /* The distances from their keys (not recomputed): the same floats. */
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B, *dr = dist + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_T v = BYZ_NAME(value)(br[j]);
      BYZ_T dv = BYZ_NAME(value)(dr[j]);
      BYZ_K low = (BYZ_K)(v <= med[j]);
      BYZ_K is_near = (BYZ_K)(dv < s.d[j]);
      BYZ_K tie = (BYZ_K)(dv == s.d[j]);
      BYZ_K tl = tie & low;
      BYZ_K th = tie & (low ^ 1);
      s.near_sum[j] += is_near ? v : (BYZ_T)0;
      near[j] += is_near;
      s.low_sum[j] += tl ? v : (BYZ_T)0;
      s.high_sum[j] += th ? v : (BYZ_T)0;
      s.tie_low[j] += tl;
      s.tie_high[j] += th;
    }
  }
  int partial = 0;
  for (int j = 0; j < w; j++) {
    BYZ_K need = (BYZ_K)k - near[j];
    s.take_low[j] = s.tie_low[j] < need ? s.tie_low[j] : need;
    s.take_high[j] = need - s.take_low[j];
    partial |= BYZ_NAME(partly)(s.take_low[j], s.tie_low[j]) |
               BYZ_NAME(partly)(s.take_high[j], s.tie_high[j]);
  }
  for (int j = 0; j < w; j++) /* no tie partly taken: the sums are the statistic */
    out[j] = (s.near_sum[j] + (s.take_low[j] ? s.low_sum[j] : (BYZ_T)0) +
              (s.take_high[j] ? s.high_sum[j] : (BYZ_T)0)) /
             (BYZ_T)k;
  if (partial) BYZ_NAME(meamed_partial_ties)(b, dist, med, &s, k, out, bad);
}

/* Weighted median (as weights.weighted_median_of_columns): the midpoint of the
 * lower value (the first, in sorted order, whose cumulative weight reaches
 * lo = W/2 - slack) and the upper one (the first whose cumulative weight
 * exceeds hi = W/2 + slack): the largest p with sum(w, key < p) < lo, and the
 * largest with sum(w, key < p) <= hi. Weights are float64, one per row. */
static void BYZ_NAME(weighted_cols)(const BYZ_NAME(block) *b, const byz_params *p,
                                    BYZ_NAME(block) *work, BYZ_T *out, uint8_t *bad) {
  (void)work, (void)bad;
  BYZ_K ka[BYZ_B], kb[BYZ_B];
  BYZ_NAME(weighted_keys)(b, p, ka, kb);
  for (int j = 0; j < b->w; j++) {
    BYZ_T a = BYZ_NAME(value)(ka[j]);
    BYZ_T b = BYZ_NAME(value)(kb[j]);
    out[j] = a / (BYZ_T)2 + b / (BYZ_T)2;
  }
}
