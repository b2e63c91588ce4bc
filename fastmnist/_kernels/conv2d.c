#include "conv2d.h"

#include "activation.h"

void fm_conv2d_f32(float *out, const float *in, const float *kernel, const float *bias, const fm_window *w,
                   size_t pixel_begin, size_t pixel_end, fm_activation activation)
{
    for (size_t pixel = pixel_begin; pixel < pixel_end; pixel++) {
        const size_t out_y = pixel / w->out_w, out_x = pixel % w->out_w;
        float *y = out + pixel * w->out_c;
        for (size_t out_c = 0; out_c < w->out_c; out_c++)
            y[out_c] = bias[out_c];
        /* Tap by tap, so that a zero input is skipped (as in fm_dense_f32): each sum still adds its terms
         * in (k_y, k_x, in_c) order. */
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
                const float *k = kernel + (k_y * w->k_w + k_x) * w->in_c * w->out_c;
                for (size_t in_c = 0; in_c < w->in_c; in_c++) {
                    if (x[in_c] == 0.0f)
                        continue;
                    for (size_t out_c = 0; out_c < w->out_c; out_c++)
                        y[out_c] += x[in_c] * k[in_c * w->out_c + out_c];
                }
            }
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
    for (size_t y = row_begin; y < row_end; y++) {
        const ptrdiff_t in_y = (ptrdiff_t)y - (ptrdiff_t)w->pad_top;
        for (size_t x = 0; x < padded_w; x++) {
            const ptrdiff_t in_x = (ptrdiff_t)x - (ptrdiff_t)w->pad_left;
            const int inside = in_y >= 0 && in_y < (ptrdiff_t)w->in_h && in_x >= 0 && in_x < (ptrdiff_t)w->in_w;
            float *value = padded + (y * padded_w + x) * w->in_c;
            const float *from = inside ? in + ((size_t)in_y * w->in_w + (size_t)in_x) * w->in_c : NULL;
            /* plain loops rather than memcpy: the kernels need no <string.h> (compilers emit the copy anyway) */
            for (size_t c = 0; c < w->in_c; c++)
                value[c] = from ? from[c] : 0.0f;
        }
    }
}

size_t fm_conv2d_packed_size_for_width(const fm_window *w, size_t panel_width)
{
    return (w->out_c + panel_width - 1) / panel_width * panel_width * w->k_h * w->k_w * w->in_c;
}

void fm_conv2d_pack_f32_for_width(float *packed, const float *kernel, const fm_window *w, size_t panel_width)
{
    const size_t panels = (w->out_c + panel_width - 1) / panel_width;
    const size_t taps = w->k_h * w->k_w * w->in_c;
    for (size_t panel = 0; panel < panels; panel++)
        for (size_t t = 0; t < taps; t++)
            for (size_t j = 0; j < panel_width; j++) {
                const size_t out_c = panel * panel_width + j;
                packed[(panel * taps + t) * panel_width + j] = out_c < w->out_c ? kernel[t * w->out_c + out_c] : 0.0f;
            }
}
