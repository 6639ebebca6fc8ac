/* The radix descents of _native_select.c: the k-th smallest key of every
 * column of a block (plain, and 16-bit for float32 blocks of fewer than 32768
 * rows), with the tie pass for repeated values (_native_weighted.h has the
 * weighted median's). Included by
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
typedef int16_t byz_i16x16 __attribute__((vector_size(32))); /* 16 lanes of 16 bits */

/* Float32 descents of fewer than 32768 rows count in 16-bit lanes, twice as
 * many per instruction: first over the keys' high halves (sign, exponent and
 * 7 mantissa bits: most descents stop there), then, if some column is still
 * open, over the low halves, where a key whose high half is below (above) its
 * column's prefix reads as the smallest (largest) low half: it is counted
 * below every cut, as it is in the full keys, so the counts stay exact. */

/* Ties: a descent whose open intervals hold a single repeated value (integer
 * or quantized data) would halve them down to the last bit without ever
 * splitting them. After TIE_STREAK passes in a row that split no open
 * interval, one pass takes each open interval's smallest and largest key;
 * where they are equal, that value is the rank's and the column is closed.
 * Done over full keys only: the 32-bit or 64-bit descent, and the float32
 * descent's low halves (its high halves are decided for every column before
 * the low halves are rekeyed, closed columns included). The high halves'
 * loop is compiled without it: there it cost 3% to 7% on smooth data. */

/* descend16's tie pass over the low halves h: each open column's interval
 * pre .. pre | span, closed at its single value where it has one: pre set to
 * it, below to the rank and upto to the rank + 1, so that later passes keep
 * it closed and the last pass takes that value from either end. */
static int settle16(const int16_t *h, int64_t n, uint16_t span, const int16_t *open,
                    int16_t rank, uint16_t *pre, int16_t *below, int16_t *upto) {
  uint16_t lo[32], hi[32], least[32], most[32];
  int closed = 0;
  for (int j = 0; j < 32; j++) {
    lo[j] = (uint16_t)(pre[j] ^ 0x8000u); /* as h holds them: sign-flipped */
    hi[j] = (uint16_t)((pre[j] | span) ^ 0x8000u);
    least[j] = most[j] = 0xFFFFu;
  }
  for (int64_t r = 0; r < n; r++) {
    const int16_t *hr = h + r * 32;
    for (int j = 0; j < 32; j++) {
      uint16_t v = (uint16_t)hr[j], a = (uint16_t)(v - lo[j]), c = (uint16_t)(hi[j] - v);
      least[j] = a < least[j] ? a : least[j];
      most[j] = c < most[j] ? c : most[j];
    }
  }
  for (int j = 0; j < 32; j++) {
    uint16_t first = (uint16_t)(lo[j] + least[j]), last = (uint16_t)(hi[j] - most[j]);
    if (open[j] && first == last) {
      closed = 1;
      pre[j] = (uint16_t)(first ^ 0x8000u);
      below[j] = rank;
      upto[j] = (int16_t)(rank + 1);
    }
  }
  return closed;
}

/* descend_one's loop over 16-bit keys h (n x 32) from `bit` down; `ties`
 * (a constant at each call): whether h holds the keys' low halves, where the
 * tie pass applies. Returns how many low bits are left undecided once every
 * column is closed (0 when the last pass closed them), or -1 when all 16 bits
 * are decided and some column is still open. */
static inline __attribute__((always_inline)) int descend16(const int16_t *h, int64_t n,
                                                           int16_t rank, int bit, int ties,
                                                           uint16_t *pre, int16_t *below,
                                                           int16_t *upto) {
  int16_t next = (int16_t)(rank + 1); /* upto > next: the rank is not the last (no widening) */
  int16_t open[32];
  int stalls = 0, streak = TIE_STREAK;
  for (; bit >= 0; bit--) {
    int16_t any = 0;
    for (int j = 0; j < 32; j++) any |= (int16_t)((below[j] < rank) & (upto[j] > next));
    if (!any) return bit + 1;
    if (ties)
      for (int j = 0; j < 32; j++) open[j] = (int16_t)-((below[j] < rank) & (upto[j] > next));
    uint16_t step = (uint16_t)(1u << bit);
    int16_t cut[32], cnt[32];
    for (int j = 0; j < 32; j++) {
      cut[j] = (int16_t)((uint16_t)(pre[j] | step) ^ 0x8000u);
      cnt[j] = 0;
    }
    /* Explicit vectors (GCC/Clang): the auto-vectorized loop took two rows at
     * a time and added 1s masked from one compare, a third more instructions. */
    byz_i16x16 cut0, cut1, cnt0 = {0}, cnt1 = {0}, odd0 = {0}, odd1 = {0};
    memcpy(&cut0, cut, sizeof cut0);
    memcpy(&cut1, cut + 16, sizeof cut1);
    int64_t r = 0;
    for (; r + 1 < n; r += 2) { /* two rows a turn: half the loop's own instructions */
      byz_i16x16 h0, h1, g0, g1;
      memcpy(&h0, h + r * 32, sizeof h0);
      memcpy(&h1, h + r * 32 + 16, sizeof h1);
      memcpy(&g0, h + r * 32 + 32, sizeof g0);
      memcpy(&g1, h + r * 32 + 48, sizeof g1);
      cnt0 -= h0 < cut0; /* a true compare is -1 */
      cnt1 -= h1 < cut1;
      odd0 -= g0 < cut0;
      odd1 -= g1 < cut1;
    }
    if (r < n) {
      byz_i16x16 h0, h1;
      memcpy(&h0, h + r * 32, sizeof h0);
      memcpy(&h1, h + r * 32 + 16, sizeof h1);
      cnt0 -= h0 < cut0;
      cnt1 -= h1 < cut1;
    }
    cnt0 += odd0;
    cnt1 += odd1;
    memcpy(cnt, &cnt0, sizeof cnt0);
    memcpy(cnt + 16, &cnt1, sizeof cnt1);
    int16_t split = 0;
    if (ties)
      for (int j = 0; j < 32; j++)
        split |= open[j] & (int16_t)-((cnt[j] > below[j]) & (cnt[j] < upto[j]));
    for (int j = 0; j < 32; j++) { /* masks, not branches: 16-bit lanes throughout */
      int16_t up = (int16_t)-(cnt[j] <= rank);
      pre[j] = (uint16_t)(pre[j] | (step & (uint16_t)up));
      below[j] = (int16_t)((cnt[j] & up) | (below[j] & ~up));
      upto[j] = (int16_t)((upto[j] & up) | (cnt[j] & ~up));
    }
    if (!ties) continue;
    stalls = split ? 0 : stalls + 1;
    if (stalls == streak && bit > 0) {
      stalls = 0;
      int closed = settle16(h, n, (uint16_t)(step - 1), open, rank, pre, below, upto);
      streak = closed ? streak : 2 * streak; /* no tie there: wait longer before the next */
    }
  }
  int16_t any = 0; /* whether the last pass closed every column */
  for (int j = 0; j < 32; j++) any |= (int16_t)((below[j] < rank) & (upto[j] > next));
  return any ? -1 : 0;
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
  /* the high halves' bits left undecided (-1: none, and a column may be open) */
  int undecided = bit >= 0 ? descend16(b->high, n, rank, bit, 0, hi_pre, below, upto) : -1;
  uint32_t span;
  if (undecided >= 0) { /* every column closed within the high halves */
    span = undecided + 16 >= 32 ? ~0u : (1u << (undecided + 16)) - 1;
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
    undecided = low_bit >= 0 ? descend16(low, n, rank, low_bit, 1, lo_pre, below, upto) : 0;
    span = undecided > 0 ? (1u << undecided) - 1 : 0;
    for (int j = 0; j < 32; j++) pre[j] = ((uint32_t)hi_pre[j] << 16) | lo_pre[j];
  }
  for (int j = 0; j < 32; j++) below32[j] = below[j];
  return span;
}
#endif

/* descend_one's tie pass (see TIE_STREAK) over full keys: each open column's
 * interval pre .. pre | span closed at its single value where it has one (as
 * settle16). */
static int BYZ_NAME(settle)(const BYZ_NAME(block) *b, BYZ_U span, const BYZ_K *open, BYZ_K rank,
                            BYZ_U *pre, BYZ_K *below, BYZ_K *upto) {
  BYZ_U lo[BYZ_B], hi[BYZ_B], least[BYZ_B], most[BYZ_B];
  int closed = 0;
  for (int j = 0; j < BYZ_B; j++) {
    lo[j] = pre[j] ^ SIGN;
    hi[j] = (pre[j] | span) ^ SIGN;
    least[j] = most[j] = ~(BYZ_U)0;
  }
  for (int64_t r = 0; r < b->n; r++) {
    const BYZ_K *br = b->keys + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      BYZ_U v = (BYZ_U)br[j], a = v - lo[j], c = hi[j] - v;
      least[j] = a < least[j] ? a : least[j];
      most[j] = c < most[j] ? c : most[j];
    }
  }
  for (int j = 0; j < BYZ_B; j++)
    if (open[j] && lo[j] + least[j] == hi[j] - most[j]) {
      closed = 1;
      pre[j] = (lo[j] + least[j]) ^ SIGN;
      below[j] = rank;
      upto[j] = rank + 1;
    }
  return closed;
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
  int bit = BYZ_NAME(start)(b, pre, below, upto), stalls = 0, streak = TIE_STREAK * BYZ_BITS / 32;
  BYZ_K open[BYZ_B];
  for (; bit >= 0; bit--) {
    BYZ_K any = 0;
    for (int j = 0; j < BYZ_B; j++) {
      open[j] = (below[j] < rank) & (rank < upto[j] - 1);
      any |= open[j];
    }
    if (!any) break;
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
    BYZ_K split = 0;
    for (int j = 0; j < BYZ_B; j++) {
      split |= open[j] & (cnt[j] > below[j]) & (cnt[j] < upto[j]);
      int up = cnt[j] <= rank;
      pre[j] = up ? pre[j] | step : pre[j];
      below[j] = up ? cnt[j] : below[j];
      upto[j] = up ? upto[j] : cnt[j];
    }
    stalls = split ? 0 : stalls + 1;
    if (stalls == streak && bit > 0) {
      stalls = 0;
      int closed = BYZ_NAME(settle)(b, step - 1, open, rank, pre, below, upto);
      streak = closed ? streak : 2 * streak; /* no tie there: wait longer before the next */
    }
  }
  /* Bits above `bit` are decided: the interval is pre .. pre | span. */
  BYZ_U span = bit + 1 >= BYZ_BITS ? ~(BYZ_U)0 : (((BYZ_U)1) << (bit + 1)) - 1;
  BYZ_NAME(end_of_interval)(b, pre, span, below, rank, out);
}
