/* The Gram matrix G = X X^T of a few rows (n <= GRAM_MAX_ROWS) in one pass over
 * an (n, d) row-major matrix, for the distance-based rules (Krum, Multi-Krum,
 * Bulyan, NNM, MDA; see _pairwise._gram). Included by _native_select.c once
 * per dtype, inside its BYZ_T/BYZ_NAME template (no include guard).
 *
 * At n = 20, BLAS's X X^T takes about three passes' time over X: a product
 * with so few rows is not a BLAS shape. Here the columns go in chunks that
 * stay in the cache (GRAM_CHUNK_BYTES of all rows) while every tile of 3 x 3 row pairs
 * (i <= j) accumulates its 9 dot products in vector registers: 6 vector
 * loads per 9 multiply-adds. Each lane sums a chunk's products (a few dozen)
 * in the input's dtype, then the chunk's partial sums go into float64: far
 * more accurate than a float32 product. */

#ifndef GRAM_TILE
#define GRAM_TILE 3         /* rows per side of a tile: 9 sums, 3 + 1 inputs in 16 registers */
#define GRAM_MAX_ROWS 32    /* beyond, BLAS's blocking wins */
#define GRAM_CHUNK_BYTES 65536 /* a chunk of every row: in L2, a third of its reads from L1 */
#endif

typedef BYZ_T BYZ_NAME(vec) __attribute__((vector_size(32)));
#define GRAM_LANES ((int)(32 / sizeof(BYZ_T)))

static inline BYZ_NAME(vec) BYZ_NAME(load_vec)(const BYZ_T *p) {
  BYZ_NAME(vec) v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* Products summed with fused multiply-adds where the CPU has them: this file's
 * sums are not compared bit for bit with another computation (the library's
 * -ffp-contract=off keeps the order statistics' arithmetic exact elsewhere). */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

/* out (n x n, float64, row-major) += the products of rows i and j over the
 * columns c0 .. c1 - 1, for every pair of a tile with j's tile at or after
 * i's (both halves of the diagonal tiles; the caller mirrors the upper
 * triangle). Returns -1 when n is out of range. */
int BYZ_NAME(byz_gram)(const BYZ_T *x, int64_t ld, int64_t n, int64_t c0, int64_t c1,
                       double *out) {
  if (n < 1 || n > GRAM_MAX_ROWS) return -1;
  int64_t chunk = GRAM_CHUNK_BYTES / ((int64_t)sizeof(BYZ_T) * n) / GRAM_LANES * GRAM_LANES;
  chunk = chunk < 8 * GRAM_LANES ? 8 * GRAM_LANES : chunk;
  for (int64_t c = c0; c < c1; c += chunk) {
    int64_t m = c1 - c < chunk ? c1 - c : chunk;
    int64_t body = m / GRAM_LANES * GRAM_LANES;
    /* The next chunk of every row, ahead: n streams are more than the hardware follows. */
    for (int64_t r = 0; r < n && c + chunk < c1; r++)
      for (int64_t k = 0; k < chunk; k += 64 / (int64_t)sizeof(BYZ_T))
        __builtin_prefetch(x + r * ld + c + chunk + k);
    for (int64_t i0 = 0; i0 < n; i0 += GRAM_TILE)
      for (int64_t j0 = i0; j0 < n; j0 += GRAM_TILE) {
        const BYZ_T *a[GRAM_TILE], *b[GRAM_TILE];
        for (int t = 0; t < GRAM_TILE; t++) { /* a tile past row n - 1 repeats it, unstored */
          a[t] = x + (i0 + t < n ? i0 + t : n - 1) * ld + c;
          b[t] = x + (j0 + t < n ? j0 + t : n - 1) * ld + c;
        }
        BYZ_NAME(vec) acc[GRAM_TILE][GRAM_TILE];
        memset(acc, 0, sizeof acc);
        for (int64_t k = 0; k < body; k += GRAM_LANES) {
          BYZ_NAME(vec) va[GRAM_TILE];
          for (int t = 0; t < GRAM_TILE; t++) va[t] = BYZ_NAME(load_vec)(a[t] + k);
          for (int q = 0; q < GRAM_TILE; q++) {
            BYZ_NAME(vec) vb = BYZ_NAME(load_vec)(b[q] + k);
            for (int p = 0; p < GRAM_TILE; p++) acc[p][q] += va[p] * vb;
          }
        }
        for (int p = 0; p < GRAM_TILE && i0 + p < n; p++)
          for (int q = 0; q < GRAM_TILE && j0 + q < n; q++) {
            double s = 0.0;
            for (int l = 0; l < GRAM_LANES; l++) s += (double)acc[p][q][l];
            for (int64_t k = body; k < m; k++) s += (double)a[p][k] * (double)b[q][k];
            out[(i0 + p) * n + j0 + q] += s;
          }
      }
  }
  return 0;
}

#pragma GCC pop_options
