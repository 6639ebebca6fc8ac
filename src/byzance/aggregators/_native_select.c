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
 * NaN or an infinity (which also tells the caller a row is non-finite, with
 * no pass of its own), BYZ_BAD_TIE for a tie the kernel cannot decide.
 *
 * This file: the keys, the panel load, the driver (run) and the exported
 * kernels, once per dtype (the file includes itself with BYZ_T, BYZ_K, ...
 * set). _native_descent.h: the descents; _native_weighted.h: the weighted
 * median's; _native_statistics.h: the statistic of a block;
 * _native_distances.h: distances to a point; _native_gram.h: the Gram matrix
 * of a few rows.
 */
#ifndef BYZ_T

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BYZ_BAD_TIE 1
#define BYZ_BAD_NONFINITE 2
#define SHORT_MAX_ROWS 32767 /* the 16-bit counts of the float32 short descent */
#define PANEL_BYTES (1 << 19)  /* the keys of one panel of blocks: about an L2 cache */
#define PANEL_MAX 1024         /* columns of a panel */
#define PREFETCH_BLOCKS 4      /* how far ahead in a row the load prefetches */
#define FIXED_ONE 1073741824.0 /* 2^30: the total weight in the fixed-point descent */
#define UNCOUNTED_PASSES 6 /* the weighted fixed-point descent's first passes (_native_weighted.h) */
#define TIE_STREAK 4 /* passes in a row that split no interval before a tie pass (_native_descent.h) */

/* A kernel's parameters: the rank (trimmed mean: the trim; meamed: k) or the
 * weighted median's row weights, bounds, total weight and whether a positive
 * weight is within the slack. */
typedef struct {
  int64_t rank;
  const double *weight;
  double lo, hi, total;
  int tiny;
  const int32_t *fixed; /* the weights in units of about 2^-30 of their total (or NULL), */
  int32_t fixed_lo;     /* and lo in the same proportion of their sum, rounded up */
} byz_params;

#define BYZ_T float
#define BYZ_K int32_t
#define BYZ_U uint32_t
#define BYZ_BITS 32
#define BYZ_B 32
#define BYZ_NAME(name) name##_f32
#include __FILE__
#undef BYZ_T
#undef BYZ_K
#undef BYZ_U
#undef BYZ_BITS
#undef BYZ_B
#undef BYZ_NAME

#define BYZ_T double
#define BYZ_K int64_t
#define BYZ_U uint64_t
#define BYZ_BITS 64
#define BYZ_B 16
#define BYZ_NAME(name) name##_f64
#include __FILE__

int byz_native_abi(void) { return 2; }

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

/* One block: n rows of BYZ_B keys (w of the columns real, the others
 * padding), the columns' smallest and largest keys, and for float32 blocks of
 * at most SHORT_MAX_ROWS rows the keys' high halves (n x 32) and a scratch of
 * that size for the 16-bit descent (both NULL otherwise). */
typedef struct {
  const BYZ_K *keys, *kmin, *kmax;
  const int16_t *high;
  int16_t *low;
  int64_t n;
  int w;
} BYZ_NAME(block);

/* Keys of the pw columns c0 .. c0 + pw - 1 (a panel of whole and partial
 * blocks) into keys, block after block (block q: n x BYZ_B at keys + q n
 * BYZ_B; padding columns get KMAX), and their high halves into high likewise
 * (float32; unless NULL). Row r of the block is x's row rows[r] (rows: NULL
 * for the first n rows), so that a subset of rows needs no gathered copy. A panel reads pw contiguous values of each row, not
 * BYZ_B: reading n rows one block at a time runs at under half the memory
 * bandwidth. Only stores here: the columns' extremes are taken block by
 * block afterwards (block_extremes), from the cache, in registers. */
static void BYZ_NAME(load_panel)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows,
                                 int64_t c0, int pw, BYZ_K *keys, int16_t *high) {
  int blocks = (pw + BYZ_B - 1) / BYZ_B;
  for (int64_t r = 0; r < n; r++) {
    const BYZ_T *row = x + (rows ? rows[r] : r) * ld + c0;
    for (int q = 0; q < blocks; q++) {
      const BYZ_T *src = row + q * BYZ_B;
      /* Ahead in this row (into the next panel at the end): n streams are more
       * than the hardware prefetcher follows. */
      __builtin_prefetch(src + PREFETCH_BLOCKS * BYZ_B);
      __builtin_prefetch(src + PREFETCH_BLOCKS * BYZ_B + 64 / sizeof(BYZ_T));
      int w = pw - q * BYZ_B < BYZ_B ? pw - q * BYZ_B : BYZ_B;
      BYZ_T pad[BYZ_B]; /* a partial block: the missing columns read as KMAX's value */
      if (w < BYZ_B) {
        memcpy(pad, src, (size_t)w * sizeof(BYZ_T));
        for (int j = w; j < BYZ_B; j++) pad[j] = BYZ_NAME(value)(KMAX);
        src = pad;
      }
      BYZ_K *br = keys + ((int64_t)q * n + r) * BYZ_B;
      for (int j = 0; j < BYZ_B; j++) {
        BYZ_K b;
        memcpy(&b, &src[j], sizeof b);
        br[j] = b ^ ((b >> (BYZ_BITS - 1)) & KMAX);
      }
#if BYZ_BITS == 32
      if (high) {
        int16_t *hr = high + ((int64_t)q * n + r) * 32;
        for (int j = 0; j < 32; j++) hr[j] = (int16_t)(br[j] >> 16);
      }
#else
      (void)high;
#endif
    }
  }
}

/* The smallest and largest keys of each of a block's columns (n x BYZ_B keys)
 * into kmin and kmax, and whether each of its w columns is all finite into
 * nonfinite (unless NULL): keys at or beyond +inf's (NaNs of either sign
 * included) or at or below -inf's. */
static void BYZ_NAME(block_extremes)(const BYZ_K *keys, int64_t n, int w, BYZ_K *kmin,
                                     BYZ_K *kmax, uint8_t *nonfinite) {
  BYZ_K lo[BYZ_B], hi[BYZ_B];
  for (int j = 0; j < BYZ_B; j++) lo[j] = hi[j] = keys[j];
  for (int64_t r = 1; r < n; r++) {
    const BYZ_K *br = keys + r * BYZ_B;
    for (int j = 0; j < BYZ_B; j++) {
      lo[j] = br[j] < lo[j] ? br[j] : lo[j];
      hi[j] = br[j] > hi[j] ? br[j] : hi[j];
    }
  }
  BYZ_K inf = BYZ_NAME(key)((BYZ_T)INFINITY), ninf = BYZ_NAME(key)(-(BYZ_T)INFINITY);
  for (int j = 0; j < BYZ_B; j++) {
    kmin[j] = lo[j];
    kmax[j] = hi[j];
  }
  for (int j = 0; nonfinite && j < w; j++)
    nonfinite[j] = hi[j] >= inf || lo[j] <= ninf ? BYZ_BAD_NONFINITE : 0;
}

#include "_native_descent.h"
#include "_native_weighted.h"
#include "_native_distances.h"
#include "_native_gram.h"
#include "_native_step.h"
#include "_native_statistics.h"

typedef void (*BYZ_NAME(block_fn))(const BYZ_NAME(block) *b, const byz_params *p,
                                   BYZ_NAME(block) *work, BYZ_T *out, uint8_t *bad);

/* fn over columns c0 .. c1 - 1 of x's n rows (row-major, ld apart; rows: their
 * indices, or NULL for the first n), one panel of blocks at
 * a time (as many whole blocks as fit PANEL_BYTES of keys, at most PANEL_MAX
 * columns), each block's keys then staying in the cache for all its passes.
 * work: whether fn needs an n x BYZ_B scratch of keys. Returns -1 when the
 * buffer cannot be allocated. */
static int BYZ_NAME(run)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows, int64_t c0,
                         int64_t c1, BYZ_NAME(block_fn) fn, const byz_params *p, int work,
                         BYZ_T *out, uint8_t *bad) {
  int64_t fit = PANEL_BYTES / ((int64_t)sizeof(BYZ_K) * n) / BYZ_B * BYZ_B;
  int width = fit < BYZ_B ? BYZ_B : fit > PANEL_MAX ? PANEL_MAX : (int)fit;
  int halves = BYZ_BITS == 32 && n <= SHORT_MAX_ROWS;
  /* keys of the panel, of the scratch; high halves of the panel, of the scratch; low halves */
  size_t panel = (size_t)n * (size_t)width, scratch = work ? (size_t)n * BYZ_B : 0;
  size_t shorts = halves ? panel + scratch + (size_t)n * 32 : 0;
  BYZ_K *buf = malloc((panel + scratch) * sizeof(BYZ_K) + shorts * sizeof(int16_t));
  if (!buf) return -1;
  int16_t *high = halves ? (int16_t *)(buf + panel + scratch) : NULL;
  BYZ_NAME(block) spare = {buf + panel, NULL, NULL, halves ? high + panel : NULL,
                           halves ? high + panel + scratch : NULL, n, 0};
  BYZ_K kmin[BYZ_B], kmax[BYZ_B];
  for (int64_t c = c0; c < c1; c += width) {
    int pw = (int)(c1 - c < width ? c1 - c : width);
    BYZ_NAME(load_panel)(x, n, ld, rows, c, pw, buf, high);
    for (int q = 0; q * BYZ_B < pw; q++) {
      size_t at = (size_t)q * (size_t)n * BYZ_B;
      int w = pw - q * BYZ_B < BYZ_B ? pw - q * BYZ_B : BYZ_B;
      BYZ_NAME(block_extremes)(buf + at, n, w, kmin, kmax, bad + c + q * BYZ_B);
      BYZ_NAME(block) b = {buf + at, kmin, kmax, halves ? high + at : NULL, spare.low, n, w};
      fn(&b, p, &spare, out + c + q * BYZ_B, bad + c + q * BYZ_B);
    }
  }
  free(buf);
  return 0;
}

/* The exported kernels: columns c0 .. c1 - 1 of the n rows of x (ld apart;
 * rows: their indices, or NULL for the first n). */
int BYZ_NAME(byz_median)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows, int64_t c0,
                         int64_t c1, BYZ_T *out, uint8_t *bad) {
  byz_params p = {0};
  return BYZ_NAME(run)(x, n, ld, rows, c0, c1, BYZ_NAME(median_cols), &p, 0, out, bad);
}

/* Mean of ranks trim + 1 .. n - trim of every column. */
int BYZ_NAME(byz_trimmed_mean)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows,
                               int64_t c0, int64_t c1, int64_t trim, BYZ_T *out, uint8_t *bad) {
  byz_params p = {.rank = trim};
  return BYZ_NAME(run)(x, n, ld, rows, c0, c1, BYZ_NAME(trimmed_cols), &p, 0, out, bad);
}

/* Mean of the k values of every column closest to its median. */
int BYZ_NAME(byz_mean_around_median)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows,
                                     int64_t c0, int64_t c1, int64_t k, BYZ_T *out, uint8_t *bad) {
  byz_params p = {.rank = k};
  return BYZ_NAME(run)(x, n, ld, rows, c0, c1, BYZ_NAME(meamed_cols), &p, 1, out, bad);
}

int BYZ_NAME(byz_weighted_median)(const BYZ_T *x, int64_t n, int64_t ld, const int64_t *rows,
                                  int64_t c0, int64_t c1, const double *weight, double lo,
                                  double hi, BYZ_T *out, uint8_t *bad) {
  byz_params p = {.weight = weight, .lo = lo, .hi = hi};
  for (int64_t r = 0; r < n; r++) {
    p.total += weight[r];
    p.tiny |= weight[r] > 0.0 && weight[r] <= 2.0 * (hi - lo);
  }
  int32_t *fixed = BYZ_BITS == 32 && p.total > 0.0 ? malloc((size_t)n * sizeof(int32_t)) : NULL;
  if (fixed) { /* the sum F of the rounded weights is within 2^30 + n/2: exact in int32 */
    int64_t sum = 0;
    for (int64_t r = 0; r < n; r++) {
      fixed[r] = (int32_t)llround(weight[r] / p.total * FIXED_ONE);
      sum += fixed[r];
    }
    p.fixed = fixed;
    /* lo in the same proportion of F: equal weights decide exactly as in float64 */
    p.fixed_lo = (int32_t)ceil((double)sum * (lo / p.total));
  }
  int code = BYZ_NAME(run)(x, n, ld, rows, c0, c1, BYZ_NAME(weighted_cols), &p, 0, out, bad);
  free(fixed);
  return code;
}

#undef KMAX
#undef SIGN
#endif
