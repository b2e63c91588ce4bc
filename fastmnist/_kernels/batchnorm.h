/* Inference-time batch normalisation, folded to one multiply-add per value. */
#ifndef FM_BATCHNORM_H
#define FM_BATCHNORM_H

#include <stddef.h>

/* x[p][c] = x[p][c] * scale[c] + shift[c] for positions p in [begin, end) of `channels` values each,
 * where scale = gamma / sqrt(variance + epsilon) and shift = beta - mean * scale (computed once at load). */
void fm_batchnorm_f32(float *x, const float *scale, const float *shift, size_t channels, size_t begin, size_t end);

#endif
