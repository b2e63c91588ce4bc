/* Quantized fully connected layer: acc[n][o] = bias[o] + sum_k (in[n][k] - in_zero_point) * kernel[k][o],
 * requantized to uint8 (or dequantized to float logits) by requantize.h. */
#ifndef FM_DENSE_S8_H
#define FM_DENSE_S8_H

#include <stddef.h>
#include <stdint.h>

#include "requantize.h"

/* Scalar path, the definition, on the Keras layout: kernel (in_dim, out_dim) int8 row-major, bias (out_dim,).
 * Row n of the input starts at in + n * in_stride and of the output at element n * out_stride. */
void fm_dense_s8(void *out, const uint8_t *in, const int8_t *kernel, const int32_t *bias, int32_t in_zero_point,
                 size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                 const fm_requant *rq);

/* The scalar paths' step, for dense and conv2d alike: acc[i] += value * k[i] for i < count, one input value
 * times a contiguous run of a kernel row. They hold FM_S8_SCALAR_BLOCK output channels' accumulators on the
 * stack (256 bytes, which a microcontroller's stack holds) and call this with that constant count for a
 * whole block, which compilers vectorize at -O2. */
#define FM_S8_SCALAR_BLOCK 64

static inline void fm_s8_multiply_add(int32_t *acc, const int8_t *k, int32_t value, size_t count)
{
    for (size_t i = 0; i < count; i++)
        acc[i] += value * k[i];
}

/* Fast paths read inputs in groups of 4 (the dot-product instructions' group), so they read each input row
 * up to a multiple of 4 bytes: the bytes past in_dim may hold anything, as their weights are 0.
 * The kernel is packed once at load by the matching pack function; the bias is folded
 * (bias - in_zero_point * the sum of the kernel's column) and padded to FM_S8_CHANNEL_ALIGN. They skip the
 * groups of 4 inputs that are zero in every row of a block, listing the others in `scratch`: at least
 * fm_dense_s8_scratch_size(rows, in_dim) entries, private to the calling thread.
 * The _columns form computes output columns [col_begin, col_end) only, so that threads can share a layer:
 * col_begin and col_end multiples of FM_DENSE_S8_COLUMN_ALIGN (whole panels of every path), or col_end = out_dim. */
#define FM_DENSE_S8_BLOCK_ROWS 4
#define FM_DENSE_S8_COLUMN_ALIGN 64
#define FM_DENSE_S8_GROUP_ALIGN 16 /* the packing's groups of 4 inputs per panel: whole AMX weight tiles */

static inline size_t fm_dense_s8_scratch_size(size_t rows, size_t in_dim)
{
    /* per block of rows: the list's length, the rows' offset corrections (simd_s8.h), the list */
    const size_t blocks = (rows + FM_DENSE_S8_BLOCK_ROWS - 1) / FM_DENSE_S8_BLOCK_ROWS;
    return blocks * ((in_dim + 3) / 4 + 1 + FM_DENSE_S8_BLOCK_ROWS);
}

#define FM_DECLARE_DENSE_S8_FAST(isa)                                                                         \
    size_t fm_dense_s8_packed_size__##isa(size_t in_dim, size_t out_dim);                                    \
    void fm_dense_s8_pack__##isa(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim);       \
    void fm_dense_s8__##isa(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias,  \
                            size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride, \
                            const fm_requant *rq, uint32_t *scratch);                                    \
    void fm_dense_s8_columns__##isa(void *out, const uint8_t *in, const int8_t *packed,                      \
                                    const int32_t *folded_bias, size_t rows, size_t in_dim, size_t in_stride, \
                                    size_t out_dim, size_t out_stride, size_t col_begin, size_t col_end,      \
                                    const fm_requant *rq, uint32_t *scratch);

FM_DECLARE_DENSE_S8_FAST(avx2)
FM_DECLARE_DENSE_S8_FAST(avxvnni)
FM_DECLARE_DENSE_S8_FAST(avx512vnni)
FM_DECLARE_DENSE_S8_FAST(neon_i8mm)
FM_DECLARE_DENSE_S8_FAST(neon_dotprod)
/* AMX packs as AVX-512 VNNI */
size_t fm_dense_s8_packed_size__amx(size_t in_dim, size_t out_dim);
void fm_dense_s8_pack__amx(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim);
void fm_dense_s8_columns__amx(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias,
                              size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                              size_t col_begin, size_t col_end, const fm_requant *rq, uint32_t *scratch);

#endif
