#include "depthwise_conv2d.h"

#include "activation.h"
#include "conv2d.h"

void fm_depthwise_conv2d_f32(float *out, const float *in, const float *kernel, const float *bias,
                             const fm_window *w, size_t pixel_begin, size_t pixel_end, fm_activation activation)
{
    const size_t multiplier = w->out_c / w->in_c;
    for (size_t pixel = pixel_begin; pixel < pixel_end; pixel++) {
        const size_t out_y = pixel / w->out_w, out_x = pixel % w->out_w;
        float *y = out + pixel * w->out_c;
        for (size_t out_c = 0; out_c < w->out_c; out_c++) {
            const size_t in_c = out_c / multiplier;
            float acc = bias[out_c];
            for (size_t k_y = 0; k_y < w->k_h; k_y++) {
                const ptrdiff_t in_y = (ptrdiff_t)(out_y * w->stride_y + k_y) - (ptrdiff_t)w->pad_top;
                if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h)
                    continue;
                for (size_t k_x = 0; k_x < w->k_w; k_x++) {
                    const ptrdiff_t in_x = (ptrdiff_t)(out_x * w->stride_x + k_x) - (ptrdiff_t)w->pad_left;
                    if (in_x < 0 || in_x >= (ptrdiff_t)w->in_w)
                        continue;
                    acc += in[((size_t)in_y * w->in_w + (size_t)in_x) * w->in_c + in_c] *
                           kernel[(k_y * w->k_w + k_x) * w->out_c + out_c];
                }
            }
            y[out_c] = acc;
        }
        fm_activation_f32(y, w->out_c, activation);
    }
}

size_t fm_depthwise_padded_size(const fm_window *w)
{
    return fm_conv2d_padded_h(w) * fm_conv2d_padded_w(w) * fm_depthwise_channels(w->out_c);
}

void fm_depthwise_pad_f32(float *padded, const float *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t padded_w = fm_conv2d_padded_w(w), channels = fm_depthwise_channels(w->out_c);
    const size_t multiplier = w->out_c / w->in_c;
    for (size_t y = row_begin; y < row_end; y++) {
        const ptrdiff_t in_y = (ptrdiff_t)y - (ptrdiff_t)w->pad_top;
        for (size_t x = 0; x < padded_w; x++) {
            float *pixel = padded + (y * padded_w + x) * channels;
            const ptrdiff_t in_x = (ptrdiff_t)x - (ptrdiff_t)w->pad_left;
            for (size_t c = 0; c < channels; c++) /* a loop, not memset: no <string.h> in the kernels */
                pixel[c] = 0.0f;
            if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h || in_x < 0 || in_x >= (ptrdiff_t)w->in_w)
                continue;
            const float *v = in + ((size_t)in_y * w->in_w + (size_t)in_x) * w->in_c;
            for (size_t out_c = 0; out_c < w->out_c; out_c++)
                pixel[out_c] = v[out_c / multiplier];
        }
    }
}

size_t fm_depthwise_packed_size(const fm_window *w) { return w->k_h * w->k_w * fm_depthwise_channels(w->out_c); }

void fm_depthwise_pack_f32(float *packed, const float *kernel, const fm_window *w)
{
    const size_t channels = fm_depthwise_channels(w->out_c);
    for (size_t tap = 0; tap < w->k_h * w->k_w; tap++)
        for (size_t c = 0; c < channels; c++)
            packed[tap * channels + c] = c < w->out_c ? kernel[tap * w->out_c + c] : 0.0f;
}
