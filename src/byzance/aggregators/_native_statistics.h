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

/* meamed_cols' distance keys: the bits of |v - med| of every key of a block
 * (n x BYZ_B) into dist, and their high halves into high (float32; unless
 * NULL). */
static void BYZ_NAME(distance_keys)(const BYZ_K *restrict keys, int64_t n, const BYZ_T *med,
                                    BYZ_K *restrict dist, int16_t *restrict high) {
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = keys + r * BYZ_B;
    BYZ_K *dr = dist + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_T dv = BYZ_NAME(value)(br[j]) - med[j];
      BYZ_K kk;
      memcpy(&kk, &dv, sizeof kk);
      dr[j] = kk & KMAX;
    }
#if BYZ_BITS == 32
    if (high)
      for (int j = 0; j < 32; j++) high[r * 32 + j] = (int16_t)(dr[j] >> 16);
#else
    (void)high;
#endif
  }
}

/* meamed_cols' window pass: the sum of each column's values at distance at
 * most d (key kd) and their count. The first row starts the sums: zeroing
 * them would be a string store. */
static void BYZ_NAME(sum_within)(const BYZ_K *restrict keys, const BYZ_K *restrict dist, int64_t n,
                                 const BYZ_K *kd, BYZ_T *restrict sum, BYZ_K *restrict count) {
  BYZ_T s[BYZ_B];
  BYZ_K c[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    c[j] = (BYZ_K)(dist[j] <= kd[j]);
    s[j] = c[j] ? BYZ_NAME(value)(keys[j]) : (BYZ_T)0;
  }
  for (int64_t r = 1; r < n; r++) {
    const BYZ_K *br = keys + r * BYZ_B, *dr = dist + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K within = -(BYZ_K)(dr[j] <= kd[j]);
      BYZ_T v = BYZ_NAME(value)(br[j]);
      BYZ_K bits;
      memcpy(&bits, &v, sizeof bits);
      bits &= within; /* the value, or +0.0 */
      memcpy(&v, &bits, sizeof v);
      s[j] += v;
      c[j] -= within;
    }
  }
  for (int j = 0; j < BYZ_B; j++) {
    sum[j] = s[j];
    count[j] = c[j];
  }
}

/* meamed_cols' columns whose values at the k-th smallest distance d are not
 * all taken (some at d below the median are left out, or some above it while
 * those below are taken first): the values nearer than d, then the ties at d
 * below the median (the largest first), then those above it (the smallest
 * first). A tie partly taken is that many copies of its largest (smallest)
 * value, flagged in bad when the tie holds distinct values (the caller's sort
 * decides those). A second pass, made only for blocks with such a column. */
static void BYZ_NAME(meamed_ties)(const BYZ_NAME(block) *b, const BYZ_K *dist, const BYZ_T *med,
                                  const BYZ_K *kd, const BYZ_K *count_le, int64_t k, BYZ_T *out,
                                  uint8_t *bad) {
  BYZ_T near_sum[BYZ_B], low_sum[BYZ_B], high_sum[BYZ_B];
  BYZ_T low_min[BYZ_B], low_max[BYZ_B], high_min[BYZ_B], high_max[BYZ_B];
  BYZ_K near[BYZ_B], tie_low[BYZ_B], tie_high[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    near_sum[j] = low_sum[j] = high_sum[j] = 0;
    near[j] = tie_low[j] = tie_high[j] = 0;
    low_min[j] = high_min[j] = (BYZ_T)INFINITY;
    low_max[j] = high_max[j] = -(BYZ_T)INFINITY;
  }
  for (int64_t r = 0; r < b->n; r++) {
    const BYZ_K *br = b->keys + r * BYZ_B, *dr = dist + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_T v = BYZ_NAME(value)(br[j]);
      BYZ_K low = (BYZ_K)(v <= med[j]);
      BYZ_K is_near = (BYZ_K)(dr[j] < kd[j]);
      BYZ_K tie = (BYZ_K)(dr[j] == kd[j]);
      BYZ_K tl = tie & low;
      BYZ_K th = tie & (low ^ 1);
      near_sum[j] += is_near ? v : (BYZ_T)0;
      near[j] += is_near;
      low_sum[j] += tl ? v : (BYZ_T)0;
      high_sum[j] += th ? v : (BYZ_T)0;
      tie_low[j] += tl;
      tie_high[j] += th;
      /* selects, then minima and maxima: no branch for the vectorizer to mask */
      BYZ_T low_v = tl ? v : (BYZ_T)INFINITY, low_w = tl ? v : -(BYZ_T)INFINITY;
      BYZ_T high_v = th ? v : (BYZ_T)INFINITY, high_w = th ? v : -(BYZ_T)INFINITY;
      low_min[j] = low_v < low_min[j] ? low_v : low_min[j];
      low_max[j] = low_w > low_max[j] ? low_w : low_max[j];
      high_min[j] = high_v < high_min[j] ? high_v : high_min[j];
      high_max[j] = high_w > high_max[j] ? high_w : high_max[j];
    }
  }
  for (int j = 0; j < b->w; j++) {
    if (count_le[j] == (BYZ_K)k) continue; /* every value up to d taken: out is right */
    BYZ_K need = (BYZ_K)k - near[j];
    BYZ_K take_low = tie_low[j] < need ? tie_low[j] : need, take_high = need - take_low;
    BYZ_T low_part = take_low == tie_low[j] ? low_sum[j] : (BYZ_T)take_low * low_max[j];
    BYZ_T high_part = take_high == tie_high[j] ? high_sum[j]
                      : take_high == 0        ? (BYZ_T)0
                                              : (BYZ_T)take_high * high_min[j];
    out[j] = (near_sum[j] + low_part + high_part) / (BYZ_T)k;
    int low_partly = take_low < tie_low[j] && take_low > 0 && low_min[j] != low_max[j];
    int high_partly = take_high < tie_high[j] && take_high > 0 && high_min[j] != high_max[j];
    if (low_partly || high_partly) bad[j] |= BYZ_BAD_TIE;
  }
}

/* Mean of the k values closest to the median (as _select.select_mean_around_median):
 * the k-th smallest distance d by a second descent over the distances' keys,
 * then the sum of the values at distance at most d. When more than k values
 * lie within d (a tie at d), meamed_ties takes the values nearer than d and
 * then the ties, those below the median first. */
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
  /* |v - med| is med - v below the median and v - med above it (rounding is
   * symmetric in sign), never -0.0; a distance's key is its bits (it is not
   * negative). A NaN column is flagged by the load and decided by the caller.
   * Only stores here (restrict: no overlap test per row); the extremes after. */
  BYZ_NAME(distance_keys)(blk, n, med, dist, dist_high);
  BYZ_NAME(block_extremes)(dist, n, w, dmin, dmax, NULL);
  BYZ_NAME(block) distances = {dist, dmin, dmax, dist_high, b->low, n, w};
  BYZ_NAME(descend_one)(&distances, k - 1, kd);
  for (int j = w; j < BYZ_B; j++) kd[j] = KMAX;
  BYZ_T sum[BYZ_B];
  BYZ_K count_le[BYZ_B];
  BYZ_NAME(sum_within)(blk, dist, n, kd, sum, count_le);
  int ties = 0;
  for (int j = 0; j < w; j++) {
    out[j] = sum[j] / (BYZ_T)k;
    ties |= count_le[j] != (BYZ_K)k;
  }
  if (ties) BYZ_NAME(meamed_ties)(b, dist, med, kd, count_le, k, out, bad);
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
