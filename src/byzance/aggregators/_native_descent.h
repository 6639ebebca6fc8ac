/* The radix descents of _native_select.c: the k-th smallest key of every
 * column of a block (plain, and 16-bit for float32 blocks of fewer than 32768
 * rows), and the weighted descent of the weighted median. Included by
 * _native_select.c once per dtype, inside its BYZ_T/BYZ_K/BYZ_NAME template
 * (no include guard); see that file for the keys and the blocks. */

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
static int BYZ_NAME(start)(const BYZ_NAME(block) *b, BYZ_U *pre, BYZ_K *below, BYZ_K *upto) {
  int top = BYZ_NAME(top_bit)(b->kmin, b->kmax, b->w);
  BYZ_U keep = top + 1 >= BYZ_BITS ? 0 : ~((((BYZ_U)1) << (top + 1)) - 1);
  for (int j = 0; j < BYZ_B; j++) {
    pre[j] = ((BYZ_U)b->kmin[j] ^ SIGN) & keep;
    below[j] = 0;
    upto[j] = j < b->w ? (BYZ_K)b->n : 1;
  }
  return top;
}

/* A descent's last pass: the smallest key at or above each column's prefix. */
static void BYZ_NAME(first_from)(const BYZ_NAME(block) *b, const BYZ_U *pre, BYZ_K *out) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n;
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
  for (int j = 0; j < b->w; j++) out[j] = best[j];
}

/* A plain descent's last pass: each column's smallest key at or above its
 * prefix when the rank sought is the first of its interval (k == below),
 * else its largest key at or below the interval's upper end (the last). As
 * unsigned distances from the interval's ends: a key outside wraps to a large
 * one, so each side is a subtraction and a minimum. */
static void BYZ_NAME(end_of_interval)(const BYZ_NAME(block) *b, const BYZ_U *pre, BYZ_U span,
                                      const BYZ_K *below, BYZ_K k, BYZ_K *out) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n;
  BYZ_U lo[BYZ_B], hi[BYZ_B], above_lo[BYZ_B], under_hi[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) {
    lo[j] = pre[j] ^ SIGN;
    hi[j] = (pre[j] | span) ^ SIGN;
    above_lo[j] = under_hi[j] = ~(BYZ_U)0;
  }
  for (int64_t r = 0; r < n; r++) {
    const BYZ_K *br = blk + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_U v = (BYZ_U)br[j];
      BYZ_U a = v - lo[j], c = hi[j] - v;
      above_lo[j] = a < above_lo[j] ? a : above_lo[j];
      under_hi[j] = c < under_hi[j] ? c : under_hi[j];
    }
  }
  for (int j = 0; j < b->w; j++)
    out[j] = (BYZ_K)(below[j] == k ? lo[j] + above_lo[j] : hi[j] - under_hi[j]);
}

#if BYZ_BITS == 32
/* Float32 descents of fewer than 32768 rows count in 16-bit lanes, twice as
 * many per instruction: first over the keys' high halves (sign, exponent and
 * 7 mantissa bits: most descents stop there), then, if some column is still
 * open, over the low halves, where a key whose high half is below (above) its
 * column's prefix reads as the smallest (largest) low half: it is counted
 * below every cut, as it is in the full keys, so the counts stay exact. */

/* descend_one's loop over 16-bit keys h (n x 32) from `bit` down; returns the
 * bit it stopped at (-1: all 16 bits decided). */
static int descend16(const int16_t *h, int64_t n, int16_t rank, int bit, uint16_t *pre,
                     int16_t *below, int16_t *upto) {
  int16_t next = (int16_t)(rank + 1); /* upto > next: the rank is not the last (no widening) */
  for (; bit >= 0; bit--) {
    int16_t open = 0;
    for (int j = 0; j < 32; j++) open |= (int16_t)((below[j] < rank) & (upto[j] > next));
    if (!open) break;
    uint16_t step = (uint16_t)(1u << bit);
    int16_t cut[32], cnt[32];
    for (int j = 0; j < 32; j++) {
      cut[j] = (int16_t)((uint16_t)(pre[j] | step) ^ 0x8000u);
      cnt[j] = 0;
    }
    for (int64_t r = 0; r < n; r++) {
      const int16_t *hr = h + r * 32;
      for (int j = 0; j < 32; j++) cnt[j] = (int16_t)(cnt[j] + (hr[j] < cut[j]));
    }
    for (int j = 0; j < 32; j++) { /* masks, not branches: 16-bit lanes throughout */
      int16_t up = (int16_t)-(cnt[j] <= rank);
      pre[j] = (uint16_t)(pre[j] | (step & (uint16_t)up));
      below[j] = (int16_t)((cnt[j] & up) | (below[j] & ~up));
      upto[j] = (int16_t)((upto[j] & up) | (cnt[j] & ~up));
    }
  }
  return bit;
}

/* descend_one for float32 blocks with high halves (b->high). Leaves each
 * column's prefix (pre), the interval's span and the counts below it as the
 * 32-bit descent does. */
static uint32_t descend_short(const block_f32 *b, int16_t rank, uint32_t *pre, int32_t *below32) {
  const int32_t *blk = b->keys, *kmin = b->kmin;
  int64_t n = b->n;
  int16_t *low = b->low;
  int top = top_bit_f32(kmin, b->kmax, b->w);
  uint16_t hi_pre[32], lo_pre[32];
  int16_t below[32], upto[32];
  int bit = top - 16; /* the high halves' bit */
  uint16_t keep = bit + 1 >= 16 ? 0 : (uint16_t)~((1u << (bit < 0 ? 0 : bit + 1)) - 1);
  for (int j = 0; j < 32; j++) {
    hi_pre[j] = (uint16_t)((((uint32_t)kmin[j] ^ SIGN) >> 16) & keep);
    below[j] = 0;
    upto[j] = j < b->w ? (int16_t)n : 1;
  }
  if (bit >= 0) bit = descend16(b->high, n, rank, bit, hi_pre, below, upto);
  uint32_t span;
  if (bit >= 0) { /* every column closed within the high halves */
    span = bit + 17 >= 32 ? ~0u : (1u << (bit + 17)) - 1;
    for (int j = 0; j < 32; j++) pre[j] = (uint32_t)hi_pre[j] << 16;
  } else {
    int low_bit = top < 16 ? top : 15;
    uint16_t low_keep = (uint16_t)~((1u << (low_bit + 1)) - 1);
    for (int j = 0; j < 32; j++) lo_pre[j] = (uint16_t)(((uint32_t)kmin[j] ^ SIGN) & low_keep);
    for (int64_t r = 0; r < n; r++) {
      const int32_t *br = blk + r * 32;
      int16_t *hr = low + r * 32;
      for (int j = 0; j < 32; j++) {
        uint32_t u = (uint32_t)br[j] ^ SIGN;
        uint16_t high = (uint16_t)(u >> 16);
        int16_t low = (int16_t)((uint16_t)u ^ 0x8000u);
        hr[j] = high < hi_pre[j] ? INT16_MIN : high > hi_pre[j] ? INT16_MAX : low;
      }
    }
    bit = low_bit >= 0 ? descend16(low, n, rank, low_bit, lo_pre, below, upto) : -1;
    span = (1u << (bit + 1)) - 1;
    for (int j = 0; j < 32; j++) pre[j] = ((uint32_t)hi_pre[j] << 16) | lo_pre[j];
  }
  for (int j = 0; j < 32; j++) below32[j] = below[j];
  return span;
}
#endif

/* The (k + 1)-th smallest key of every column of blk (0-based rank k), by
 * radix descent from the highest bit where some column's smallest and largest
 * keys differ. The descent keeps, per column, the counts of keys below the
 * prefix (below) and below the prefix's upper end (upto). It stops once the
 * rank sought is the first or the last of every column's interval (below == k
 * or upto == k + 1): one side's nearest neighbour split off suffices, where a
 * single key left in the interval needs both (on smooth data about 3 fewer
 * passes of the 15-18 that the worst of a block's columns takes). A last pass
 * then takes the smallest or the largest key of each interval. */
static void BYZ_NAME(descend_one)(const BYZ_NAME(block) *b, int64_t k, BYZ_K *out) {
  const BYZ_K *blk = b->keys;
  int64_t n = b->n;
  if (k == 0 || k == n - 1) { /* the smallest or largest key */
    for (int j = 0; j < b->w; j++) out[j] = k == 0 ? b->kmin[j] : b->kmax[j];
    return;
  }
  BYZ_U pre[BYZ_B];
  BYZ_K below[BYZ_B], upto[BYZ_B], rank = (BYZ_K)k;
#if BYZ_BITS == 32
  if (b->high) {
    BYZ_U span = descend_short(b, (int16_t)k, pre, below);
    BYZ_NAME(end_of_interval)(b, pre, span, below, rank, out);
    return;
  }
#endif
  int bit = BYZ_NAME(start)(b, pre, below, upto);
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
  BYZ_NAME(end_of_interval)(b, pre, span, below, rank, out);
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
  int bit = start_f32(b, pre, below, upto);
  for (; bit >= 0; bit--) {
    int open = 0;
    for (int j = 0; j < 32; j++) open |= upto[j] - below[j] > 1;
    if (!open) break;
    uint32_t step = 1u << bit;
    int32_t cut[32], cnt[32], sum[32];
    for (int j = 0; j < 32; j++) {
      cut[j] = (int32_t)((pre[j] | step) ^ SIGN);
      cnt[j] = sum[j] = 0;
    }
    for (int64_t r = 0; r < b->n; r++) {
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
