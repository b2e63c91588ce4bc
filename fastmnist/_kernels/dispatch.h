/* One table of kernels per instruction set, so the executor calls whichever path a model was prepared for. */
#ifndef FM_DISPATCH_H
#define FM_DISPATCH_H

#include <stdint.h>

#include "common.h"
#include "cpu.h"

typedef struct {
    fm_isa isa;
    size_t (*panel_width)(void); /* dense columns per packed panel; splits between threads align to it */
    size_t (*dense_packed_size)(size_t in_dim, size_t out_dim);
    void (*dense_pack)(float *packed, const float *kernel, size_t in_dim, size_t out_dim);
    void (*dense)(float *out, const float *in, const float *packed, const float *bias, size_t rows,
                  size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end, fm_activation activation,
                  uint32_t *active); /* scratch of fm_dense_active_size entries */
    size_t (*conv2d_packed_size)(const fm_window *w);
    void (*conv2d_pack)(float *packed, const float *kernel, const fm_window *w);
    /* NULL for the scalar path, which convolves the unpadded input directly (fm_conv2d_f32) */
    void (*conv2d_padded)(float *out, const float *padded, const float *packed, const float *bias,
                          const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation,
                          uint32_t *active); /* scratch of fm_conv2d_active_size entries */
    size_t (*depthwise_packed_size)(const fm_window *w);
    void (*depthwise_pack)(float *packed, const float *kernel, const fm_window *w);
    /* NULL for the scalar path, which convolves the unpadded input directly (fm_depthwise_conv2d_f32) */
    void (*depthwise_padded)(float *out, const float *padded, const float *packed, const float *bias,
                             const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation);
    void (*activation)(float *x, size_t count, fm_activation activation);
    void (*softmax)(float *x, size_t rows, size_t row_len);
} fm_kernels;

/* The kernels for `isa`, or NULL when this build or CPU cannot run it. */
const fm_kernels *fm_kernels_for(fm_isa isa);

#endif
