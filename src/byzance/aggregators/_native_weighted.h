/* The weighted median's descents of _native_select.c: the weighted radix
 * descent (float64 sums of the row weights), its int32 fixed-point form for
 * float32 blocks with the float64 check of its candidate, and the lower and
 * upper keys of every column. Included by _native_select.c once per dtype,
 * after _native_descent.h, inside its BYZ_T/BYZ_K/BYZ_NAME template (no
 * include guard). */

/* For every column, the largest key p with sum(weight, key < p) < target
 * (strict) or <= target (not strict), by radix descent as descend_one, with
 * row weights in place of counts. The descent keeps the invariant that the
 * keys below the prefix weigh under the target and those below the
 * interval's upper end do not, so once an interval holds a single key that
 * key is the answer (a zero-weight key cannot be: it would break the
 * invariant). Leaves each column's prefix in pre and the weight of the keys
 * below its interval's upper end in wupto (total: the weight of all rows);
 * returns the bit it stopped at (the interval is pre .. pre | span(bit)). */
static int BYZ_NAME(weighted_descend)(const BYZ_NAME(block) *b, const double *weight,
                                      double target, int strict, double total, BYZ_U *pre,
                                      double *wupto) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n;
  BYZ_K below[BYZ_B], upto[BYZ_B]; /* keys below the prefix, below its upper end */
  int bit = BYZ_NAME(start)(b, pre, below, upto);
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

#if BYZ_BITS == 32
/* Whether cand is, in every column, the weighted median's lower key: the
 * first in sorted order whose cumulative weight reaches lo, i.e. W(key < p)
 * < lo <= W(key <= p), in float64 sums in row order. If so, the lower keys
 * into ka and the upper ones into kb (as weighted_keys: no tiny weight). */
static int weighted_check(const block_f32 *b, const byz_params *p, const int32_t *cand, int32_t *ka,
                          int32_t *kb) {
  double lt[BYZ_B], le[BYZ_B];
  BYZ_K next[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    lt[j] = le[j] = 0.0;
    next[j] = KMAX;
  }
  for (int64_t r = 0; r < b->n; r++) {
    const BYZ_K *br = b->keys + r * BYZ_B;
    double wr = p->weight[r];
    BYZ_K positive = wr > 0.0;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_K v = br[j];
      lt[j] += v < cand[j] ? wr : 0.0;
      le[j] += v <= cand[j] ? wr : 0.0;
      BYZ_K above = positive & (v > cand[j]) ? v : KMAX;
      next[j] = above < next[j] ? above : next[j];
    }
  }
  for (int j = 0; j < b->w; j++)
    if (!(lt[j] < p->lo && le[j] >= p->lo)) return 0;
  for (int j = 0; j < b->w; j++) {
    ka[j] = cand[j];
    kb[j] = le[j] > p->hi || next[j] == KMAX ? cand[j] : next[j];
  }
  return 1;
}

/* The weighted descent to the lower key in fixed point: each weight rounded
 * to units of 2^-30 of the total (p->fixed), summed exactly in int32 lanes, 8
 * columns per instruction with the compare masks as they are, where float64
 * sums take 4 columns per instruction and widen the masks. The weights'
 * rounding (under n 2^-31 of the total) can misplace a cut within that of lo,
 * so its candidate, the single key of each last interval, is checked in
 * float64 (weighted_check) before it is used. Returns the bit it stopped at. */
static int weighted_descend_fixed(const block_f32 *b, const byz_params *p, uint32_t *pre) {
  const int32_t *blk = b->keys;
  int32_t below[32], upto[32];
  int bit = start_f32(b, pre, below, upto), passes = 0;
  for (; bit >= 0; bit--) {
    int open = 0;
    for (int j = 0; j < 32; j++) open |= upto[j] - below[j] > 1;
    if (!open) break;
    uint32_t step = 1u << bit;
    int32_t cut[32], cnt[32], sum[32];
    /* The sums start from row 0: zeroing them compiles to a string store (rep
     * stos) whose start-up cost is a tenth of a pass at n = 100. */
    for (int j = 0; j < 32; j++) {
      cut[j] = (int32_t)((pre[j] | step) ^ SIGN);
      int32_t below = -(int32_t)(blk[j] < cut[j]);
      cnt[j] = -below;
      sum[j] = below & p->fixed[0];
    }
    if (passes++ < UNCOUNTED_PASSES) {
      /* No counts in the first passes, where no interval is down to one key:
       * below and upto then keep their wider values (a later pass refreshes
       * them), which can only delay the stop. */
      for (int64_t r = 1; r < b->n; r++) {
        const int32_t *br = blk + r * 32;
        int32_t wr = p->fixed[r];
        for (int j = 0; j < 32; j++) sum[j] += -(int32_t)(br[j] < cut[j]) & wr;
      }
      for (int j = 0; j < 32; j++) pre[j] = sum[j] < p->fixed_lo ? pre[j] | step : pre[j];
      continue;
    }
    for (int64_t r = 1; r < b->n; r++) {
      const int32_t *br = blk + r * 32;
      int32_t wr = p->fixed[r];
      for (int j = 0; j < 32; j++) {
        int32_t below = -(int32_t)(br[j] < cut[j]);
        cnt[j] -= below;
        sum[j] += below & wr;
      }
    }
    for (int j = 0; j < 32; j++) {
      int up = sum[j] < p->fixed_lo;
      pre[j] = up ? pre[j] | step : pre[j];
      below[j] = up ? cnt[j] : below[j];
      upto[j] = up ? upto[j] : cnt[j];
    }
  }
  return bit;
}
#endif

/* The lower and upper keys of the weighted median (see byz_weighted_median).
 * With no tiny weight (0 < w <= 2 (hi - lo)), one descent: the lower key p is
 * the single key of its final interval and wupto the weight of the keys up to
 * p; the upper key is p when that weight exceeds hi, else the next key of
 * positive weight (a zero-weight key is never chosen, and the next positive
 * one lifts the weight above lo + 2 (hi - lo) > hi), found in the same last
 * pass as p. With a tiny weight, a second descent to hi. */
static void BYZ_NAME(weighted_keys)(const BYZ_NAME(block) *b, const byz_params *p, BYZ_K *ka,
                                    BYZ_K *kb) {
  const BYZ_K *blk = b->keys;
  const double *weight = p->weight;
  int64_t n = b->n;
  BYZ_U pre[BYZ_B];
  double wupto[BYZ_B];
#if BYZ_BITS == 32
  if (p->fixed && !p->tiny) {
    BYZ_K cand[BYZ_B];
    weighted_descend_fixed(b, p, pre);
    BYZ_NAME(first_from)(b, pre, cand);
    for (int j = b->w; j < BYZ_B; j++) cand[j] = KMAX;
    if (weighted_check(b, p, cand, ka, kb)) return;
  }
#endif
  int bit = BYZ_NAME(weighted_descend)(b, weight, p->lo, 1, p->total, pre, wupto);
  if (p->tiny) {
    BYZ_NAME(first_from)(b, pre, ka);
    BYZ_NAME(weighted_descend)(b, weight, p->hi, 0, p->total, pre, wupto);
    BYZ_NAME(first_from)(b, pre, kb);
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
  for (int j = 0; j < b->w; j++) {
    ka[j] = least[j];
    kb[j] = wupto[j] > p->hi || next[j] == KMAX ? least[j] : next[j];
  }
}
