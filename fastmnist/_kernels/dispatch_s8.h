/* One table of int8 kernels per instruction set, so the int8 executor calls whichever path a model was
 * prepared for. */
#ifndef FM_DISPATCH_S8_H
#define FM_DISPATCH_S8_H

#include <stdint.h>

#include "common.h"
#include "cpu_s8.h"
#include "requantize.h"

typedef struct {
    fm_s8_isa isa;
    size_t (*dense_packed_size)(size_t in_dim, size_t out_dim);
    void (*dense_pack)(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim);
    /* columns [col_begin, col_end) (dense_s8.h); NULL for the scalar path, which the executor calls with the
     * unfolded bias (fm_dense_s8) */
    void (*dense)(void *out, const uint8_t *in, const int8_t *packed, const int32_t *folded_bias, size_t rows,
                  size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride, size_t col_begin,
                  size_t col_end, const fm_requant *rq, uint32_t *scratch);
    size_t (*conv2d_packed_size)(const fm_window *w);
    void (*conv2d_pack)(int8_t *packed, const int8_t *kernel, const fm_window *w);
    /* NULL for the scalar path, which convolves the unpadded input (fm_conv2d_s8) */
    void (*conv2d_padded)(uint8_t *out, const uint8_t *padded, const int8_t *packed, const int32_t *folded_bias,
                          const fm_window *w, size_t row_begin, size_t row_end, const fm_requant *rq,
                          uint32_t *scratch);
} fm_s8_kernels;

/* The kernels for `isa`, or NULL when this build or CPU cannot run it. */
const fm_s8_kernels *fm_s8_kernels_for(fm_s8_isa isa);

#endif
