/* 2-D convolution (cross-correlation, as tf.nn.conv2d), NHWC, one image, kernel HWIO. */
#ifndef FM_CONV2D_H
#define FM_CONV2D_H

#include <stdint.h>

#include "common.h"

/* Scalar path: output pixels [pixel_begin, pixel_end) in row-major order (pixel = out_y * out_w + out_x),
 * straight from the unpadded input, skipping taps that fall in the padding. kernel (k_h, k_w, in_c, out_c),
 * bias (out_c,). Softmax is left to the caller. */
void fm_conv2d_f32(float *out, const float *in, const float *kernel, const float *bias, const fm_window *w,
                   size_t pixel_begin, size_t pixel_end, fm_activation activation);

/* The zero-padded input the fast paths read: fm_conv2d_padded_h/w rows and columns of in_c values. */
size_t fm_conv2d_padded_h(const fm_window *w);
size_t fm_conv2d_padded_w(const fm_window *w);
/* Writes padded rows [row_begin, row_end) (so a team of threads can share the work). */
void fm_conv2d_pad_f32(float *padded, const float *in, const fm_window *w, size_t row_begin, size_t row_end);

/* The fast paths' packed kernel, for any panel width (the engine packs for the fast path it runs, the C
 * exporter for each fast path it writes): packed[panel][k_y][k_x][in_c][j] =
 * kernel[k_y][k_x][in_c][panel * panel_width + j], zero past out_c. */
size_t fm_conv2d_packed_size_for_width(const fm_window *w, size_t panel_width);
void fm_conv2d_pack_f32_for_width(float *packed, const float *kernel, const fm_window *w, size_t panel_width);

/* Fast paths compute output rows [row_begin, row_end) from the padded input, a kernel packed once at load by
 * the matching pack function (panels of output channels, zero-padded) and a bias padded to whole panels.
 * They skip the taps whose inputs are zero for a whole patch of pixels, listing the others in `active`:
 * scratch of fm_conv2d_active_size(w) entries, private to the calling thread. */
static inline size_t fm_conv2d_active_size(const fm_window *w) { return 2 * w->k_h * w->k_w * w->in_c; }

#define FM_DECLARE_CONV2D_FAST(isa)                                                                         \
    size_t fm_conv2d_packed_size__##isa(const fm_window *w);                                               \
    void fm_conv2d_pack_f32__##isa(float *packed, const float *kernel, const fm_window *w);                \
    void fm_conv2d_f32__##isa(float *out, const float *padded, const float *packed, const float *bias,     \
                              const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation, \
                              uint32_t *active);

FM_DECLARE_CONV2D_FAST(avx2)
FM_DECLARE_CONV2D_FAST(avx512)
FM_DECLARE_CONV2D_FAST(neon)

#endif
