#include "maxpool2d.h"

#include <math.h>

void fm_maxpool2d_f32(float *out, const float *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t channels = w->in_c;
    for (size_t out_y = row_begin; out_y < row_end; out_y++) {
        /* window rows [y0, y1) clipped to the input; ptrdiff_t because the padding makes y0 negative */
        const ptrdiff_t y_start = (ptrdiff_t)(out_y * w->stride_y) - (ptrdiff_t)w->pad_top;
        const size_t y0 = y_start < 0 ? 0 : (size_t)y_start;
        const size_t y1 = (size_t)(y_start + (ptrdiff_t)w->k_h) < w->in_h ? (size_t)(y_start + (ptrdiff_t)w->k_h) : w->in_h;
        for (size_t out_x = 0; out_x < w->out_w; out_x++) {
            const ptrdiff_t x_start = (ptrdiff_t)(out_x * w->stride_x) - (ptrdiff_t)w->pad_left;
            const size_t x0 = x_start < 0 ? 0 : (size_t)x_start;
            const size_t x1 = (size_t)(x_start + (ptrdiff_t)w->k_w) < w->in_w ? (size_t)(x_start + (ptrdiff_t)w->k_w) : w->in_w;
            float *o = out + (out_y * w->out_w + out_x) * channels;
            for (size_t c = 0; c < channels; c++)
                o[c] = -INFINITY;
            for (size_t in_y = y0; in_y < y1; in_y++)
                for (size_t in_x = x0; in_x < x1; in_x++) {
                    const float *v = in + (in_y * w->in_w + in_x) * channels;
                    for (size_t c = 0; c < channels; c++)
                        o[c] = v[c] > o[c] ? v[c] : o[c];
                }
        }
    }
}
