/* Fully connected layer: out[n][o] = act(sum_k in[n][k] * kernel[k][o] + bias[o]). */
#ifndef FM_DENSE_H
#define FM_DENSE_H

#include <stdint.h>

#include "common.h"

/* Scalar path on the Keras layout: kernel (in_dim, out_dim) row-major, bias (out_dim,).
 * Computes columns [col_begin, col_end) of `rows` rows; softmax is left to the caller (linear here). */
void fm_dense_f32(float *out, const float *in, const float *kernel, const float *bias,
                  size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                  fm_activation activation);

/* Fast paths work on kernels packed once at load by the matching pack function: panels of
 * fm_dense_panel_width__ISA() columns, zero-padded, in groups of neighbouring panels (see dense_simd.c), and
 * a bias padded to whole panels.
 * col_begin must be a multiple of the panel width. They take rows in blocks of FM_DENSE_BLOCK_ROWS and skip
 * the inputs that are zero throughout a block, listing the others in `active`: scratch of
 * fm_dense_active_size(rows, in_dim) entries, private to the calling thread. */
#define FM_DENSE_BLOCK_ROWS 6

static inline size_t fm_dense_active_size(size_t rows, size_t in_dim)
{
    return (rows + FM_DENSE_BLOCK_ROWS - 1) / FM_DENSE_BLOCK_ROWS * (in_dim + 1);
}

#define FM_DECLARE_DENSE_FAST(isa)                                                                          \
    size_t fm_dense_panel_width__##isa(void);                                                              \
    size_t fm_dense_packed_size__##isa(size_t in_dim, size_t out_dim);                                     \
    void fm_dense_pack_f32__##isa(float *packed, const float *kernel, size_t in_dim, size_t out_dim);      \
    void fm_dense_f32__##isa(float *out, const float *in, const float *packed, const float *bias,           \
                             size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end, \
                             fm_activation activation, uint32_t *active);

FM_DECLARE_DENSE_FAST(avx2)
FM_DECLARE_DENSE_FAST(avx512)
FM_DECLARE_DENSE_FAST(neon)

#endif
