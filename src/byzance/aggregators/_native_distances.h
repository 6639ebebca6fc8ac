/* Squared Euclidean distances from the rows of an (n, d) row-major matrix to
 * one point z, for the geometric median and centered clipping (see
 * _pairwise.distances_to). Included by _native_select.c once per dtype,
 * inside its BYZ_T/BYZ_NAME template (no include guard).
 *
 * One pass over the rows, DIST_CHUNK columns at a time, so that z's chunk
 * stays in L1 while every row's chunk streams past it (z read once from
 * memory, not once per row). Each lane sums DIST_RUN squared differences in
 * the input's dtype, then adds that run into a float64 accumulator: for
 * float32, about 16 float32 roundings per term at most, against log2(d) for a
 * pairwise sum and d for a running one (torch.cdist). */

#ifndef DIST_CHUNK
#define DIST_CHUNK 2048 /* columns per chunk: 8 KiB of float32 z */
#define DIST_LANES 16   /* two AVX2 vectors of float32 */
#define DIST_RUN 16     /* terms per lane summed in the input's dtype */
#endif

/* out[r] += the sum over the d columns of (x[r, j] - z[j])^2, for rows r0 .. r1 - 1. */
static void BYZ_NAME(sq_distances_add)(const BYZ_T *x, int64_t ld, int64_t r0, int64_t r1,
                                       int64_t d, const BYZ_T *z, double *out) {
  for (int64_t c = 0; c < d; c += DIST_CHUNK) {
    int64_t m = d - c < DIST_CHUNK ? d - c : DIST_CHUNK;
    const BYZ_T *zc = z + c;
    for (int64_t r = r0; r < r1; r++) {
      const BYZ_T *row = x + r * ld + c;
      double acc[DIST_LANES];
      for (int l = 0; l < DIST_LANES; l++) acc[l] = 0.0;
      int64_t j = 0;
      for (; j + DIST_RUN * DIST_LANES <= m; j += DIST_RUN * DIST_LANES) {
        BYZ_T run[DIST_LANES];
        for (int l = 0; l < DIST_LANES; l++) run[l] = 0;
        for (int t = 0; t < DIST_RUN * DIST_LANES; t += DIST_LANES)
          for (int l = 0; l < DIST_LANES; l++) {
            BYZ_T e = row[j + t + l] - zc[j + t + l];
            run[l] += e * e;
          }
        for (int l = 0; l < DIST_LANES; l++) acc[l] += (double)run[l];
      }
      for (; j < m; j++) {
        BYZ_T e = row[j] - zc[j];
        acc[0] += (double)(e * e);
      }
      double sum = 0.0;
      for (int l = 0; l < DIST_LANES; l++) sum += acc[l];
      out[r] += sum;
    }
  }
}

/* out[r] for rows r0 .. r1 - 1: the sum over the d columns of (x[r, j] - z[j])^2. */
int BYZ_NAME(byz_sq_distances)(const BYZ_T *x, int64_t ld, int64_t r0, int64_t r1, int64_t d,
                               const BYZ_T *z, double *out) {
  for (int64_t r = r0; r < r1; r++) out[r] = 0.0;
  BYZ_NAME(sq_distances_add)(x, ld, r0, r1, d, z, out);
  return 0;
}
