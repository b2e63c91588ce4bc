/* Depthwise 2-D convolution, NHWC, one image: output channel c * dm + m (dm = out_c / in_c, the depth
 * multiplier) is input channel c convolved with its own filter m, as tf.nn.depthwise_conv2d. */
#ifndef FM_DEPTHWISE_CONV2D_H
#define FM_DEPTHWISE_CONV2D_H

#include "common.h"

/* Scalar path: output pixels [pixel_begin, pixel_end) (pixel = out_y * out_w + out_x), straight from the
 * unpadded input, skipping taps in the padding. kernel (k_h, k_w, out_c): the Keras layout
 * (k_h, k_w, in_c, dm) read as one axis of out_c = in_c * dm channels. bias (out_c,). */
void fm_depthwise_conv2d_f32(float *out, const float *in, const float *kernel, const float *bias,
                             const fm_window *w, size_t pixel_begin, size_t pixel_end, fm_activation activation);

/* The fast paths work channel-wise on vectors: they read a padded input in which input channel c is repeated
 * at channels c * dm ... c * dm + dm - 1, and every pixel has fm_depthwise_channels(out_c) channels (zeros
 * past out_c, so that whole vectors can be loaded), and a kernel with the same channel stride. */
#define FM_DEPTHWISE_CHANNEL_ALIGN 32 /* a multiple of every ISA's FM_NR; at most FM_BIAS_ALIGN */

static inline size_t fm_depthwise_channels(size_t out_c)
{
    return (out_c + FM_DEPTHWISE_CHANNEL_ALIGN - 1) / FM_DEPTHWISE_CHANNEL_ALIGN * FM_DEPTHWISE_CHANNEL_ALIGN;
}

/* fm_conv2d_padded_h(w) x fm_conv2d_padded_w(w) pixels of fm_depthwise_channels(out_c) values */
size_t fm_depthwise_padded_size(const fm_window *w);
/* Writes padded rows [row_begin, row_end). */
void fm_depthwise_pad_f32(float *padded, const float *in, const fm_window *w, size_t row_begin, size_t row_end);
size_t fm_depthwise_packed_size(const fm_window *w);
/* packed[tap][c] = kernel[tap][c] for c < out_c, 0 up to fm_depthwise_channels(out_c) */
void fm_depthwise_pack_f32(float *packed, const float *kernel, const fm_window *w);

/* Output rows [row_begin, row_end) from the padded input, the packed kernel and a bias padded with zeros to
 * fm_depthwise_channels(out_c). */
#define FM_DECLARE_DEPTHWISE_CONV2D_FAST(isa)                                                               \
    void fm_depthwise_conv2d_f32__##isa(float *out, const float *padded, const float *packed, const float *bias, \
                                        const fm_window *w, size_t row_begin, size_t row_end,               \
                                        fm_activation activation);

FM_DECLARE_DEPTHWISE_CONV2D_FAST(avx2)
FM_DECLARE_DEPTHWISE_CONV2D_FAST(avx512)
FM_DECLARE_DEPTHWISE_CONV2D_FAST(neon)

#endif
