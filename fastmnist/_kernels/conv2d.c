#include "conv2d.h"

#include <string.h>

#include "activation.h"

void fm_conv2d_f32(float *out, const float *in, const float *kernel, const float *bias, const fm_window *w,
                   size_t pixel_begin, size_t pixel_end, fm_activation activation)
{
    for (size_t pixel = pixel_begin; pixel < pixel_end; pixel++) {
        const size_t out_y = pixel / w->out_w, out_x = pixel % w->out_w;
        float *y = out + pixel * w->out_c;
        for (size_t out_c = 0; out_c < w->out_c; out_c++) {
            float acc = bias[out_c];
            for (size_t k_y = 0; k_y < w->k_h; k_y++) {
                /* signed: with padding, the window starts above/left of the image */
                const ptrdiff_t in_y = (ptrdiff_t)(out_y * w->stride_y + k_y) - (ptrdiff_t)w->pad_top;
                if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h)
                    continue;
                for (size_t k_x = 0; k_x < w->k_w; k_x++) {
                    const ptrdiff_t in_x = (ptrdiff_t)(out_x * w->stride_x + k_x) - (ptrdiff_t)w->pad_left;
                    if (in_x < 0 || in_x >= (ptrdiff_t)w->in_w)
                        continue;
                    const float *x = in + ((size_t)in_y * w->in_w + (size_t)in_x) * w->in_c;
                    const float *k = kernel + ((k_y * w->k_w + k_x) * w->in_c) * w->out_c + out_c;
                    for (size_t in_c = 0; in_c < w->in_c; in_c++)
                        acc += x[in_c] * k[in_c * w->out_c];
                }
            }
            y[out_c] = acc;
        }
        if (activation.kind != FM_ACT_SOFTMAX)
            fm_activation_f32(y, w->out_c, activation);
    }
}

size_t fm_conv2d_padded_h(const fm_window *w) { return (w->out_h - 1) * w->stride_y + w->k_h; }

size_t fm_conv2d_padded_w(const fm_window *w) { return (w->out_w - 1) * w->stride_x + w->k_w; }

void fm_conv2d_pad_f32(float *padded, const float *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t padded_w = fm_conv2d_padded_w(w);
    const size_t row_values = padded_w * w->in_c;
    /* columns of the padded row that hold input: [left, left + copy_w); an explicit left pad can be wider
     * than the columns the windows read */
    const size_t left = w->pad_left < padded_w ? w->pad_left : padded_w;
    const size_t copy_w = w->in_w < padded_w - left ? w->in_w : padded_w - left;
    for (size_t y = row_begin; y < row_end; y++) {
        float *row = padded + y * row_values;
        const ptrdiff_t in_y = (ptrdiff_t)y - (ptrdiff_t)w->pad_top;
        if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h) {
            memset(row, 0, row_values * sizeof(float));
            continue;
        }
        memset(row, 0, left * w->in_c * sizeof(float));
        memcpy(row + left * w->in_c, in + (size_t)in_y * w->in_w * w->in_c, copy_w * w->in_c * sizeof(float));
        memset(row + (left + copy_w) * w->in_c, 0, (padded_w - left - copy_w) * w->in_c * sizeof(float));
    }
}
