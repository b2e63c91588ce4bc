#include "avgpool2d.h"

/* [first, end) of a window's positions along one axis that lie in the input */
static void clip(ptrdiff_t start, size_t window, size_t size, size_t *first, size_t *end)
{
    const ptrdiff_t stop = start + (ptrdiff_t)window;
    *first = start < 0 ? 0 : (size_t)start;
    *end = stop < (ptrdiff_t)size ? (size_t)stop : size;
}

void fm_avgpool2d_f32(float *out, const float *in, const fm_window *w, int count_include_pad, size_t row_begin,
                      size_t row_end)
{
    const size_t channels = w->in_c;
    for (size_t out_y = row_begin; out_y < row_end; out_y++) {
        size_t y0, y1;
        clip((ptrdiff_t)(out_y * w->stride_y) - (ptrdiff_t)w->pad_top, w->k_h, w->in_h, &y0, &y1);
        for (size_t out_x = 0; out_x < w->out_w; out_x++) {
            size_t x0, x1;
            clip((ptrdiff_t)(out_x * w->stride_x) - (ptrdiff_t)w->pad_left, w->k_w, w->in_w, &x0, &x1);
            float *o = out + (out_y * w->out_w + out_x) * channels;
            for (size_t c = 0; c < channels; c++)
                o[c] = 0.0f;
            for (size_t in_y = y0; in_y < y1; in_y++)
                for (size_t in_x = x0; in_x < x1; in_x++) {
                    const float *v = in + (in_y * w->in_w + in_x) * channels;
                    for (size_t c = 0; c < channels; c++)
                        o[c] += v[c];
                }
            const float count = (float)(count_include_pad ? w->k_h * w->k_w : (y1 - y0) * (x1 - x0));
            for (size_t c = 0; c < channels; c++)
                o[c] /= count;
        }
    }
}
