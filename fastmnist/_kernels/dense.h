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

/* The packed layout, for any panel width: the engine packs for the fast path it runs, the C exporter for
 * each fast path it writes. Panels of `panel_width` columns, the last zero-padded, in groups of
 * FM_DENSE_GROUP_PANELS neighbouring panels; a group stores row k of all its panels side by side. */
#define FM_DENSE_GROUP_PANELS 6

static inline size_t fm_dense_padded_columns(size_t out_dim, size_t panel_width)
{
    return (out_dim + panel_width - 1) / panel_width * panel_width;
}

/* Where row 0 of the panel that starts at column `col` (a multiple of panel_width) lies in the packed
 * weights, and in `stride` the distance between its rows: the width of its group, narrower at the right. */
static inline size_t fm_dense_panel_offset(size_t in_dim, size_t out_dim, size_t col, size_t panel_width,
                                           size_t *stride)
{
    const size_t group = FM_DENSE_GROUP_PANELS * panel_width, group_first = col / group * group;
    const size_t rest = fm_dense_padded_columns(out_dim, panel_width) - group_first;
    *stride = rest < group ? rest : group;
    return group_first * in_dim + (col - group_first);
}

size_t fm_dense_packed_size_for_width(size_t in_dim, size_t out_dim, size_t panel_width);
void fm_dense_pack_f32_for_width(float *packed, const float *kernel, size_t in_dim, size_t out_dim,
                                 size_t panel_width);

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
