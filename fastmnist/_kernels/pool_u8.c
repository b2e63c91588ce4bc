#include "pool_u8.h"

void fm_maxpool2d_u8(uint8_t *out, const uint8_t *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t channels = w->in_c;
    for (size_t out_y = row_begin; out_y < row_end; out_y++) {
        const ptrdiff_t y_start = (ptrdiff_t)(out_y * w->stride_y) - (ptrdiff_t)w->pad_top;
        const ptrdiff_t y_stop = y_start + (ptrdiff_t)w->k_h;
        const size_t y0 = y_start < 0 ? 0 : (size_t)y_start;
        const size_t y1 = (size_t)y_stop < w->in_h ? (size_t)y_stop : w->in_h;
        for (size_t out_x = 0; out_x < w->out_w; out_x++) {
            const ptrdiff_t x_start = (ptrdiff_t)(out_x * w->stride_x) - (ptrdiff_t)w->pad_left;
            const ptrdiff_t x_stop = x_start + (ptrdiff_t)w->k_w;
            const size_t x0 = x_start < 0 ? 0 : (size_t)x_start;
            const size_t x1 = (size_t)x_stop < w->in_w ? (size_t)x_stop : w->in_w;
            uint8_t *o = out + (out_y * w->out_w + out_x) * channels;
            for (size_t c = 0; c < channels; c++)
                o[c] = 0;
            for (size_t y = y0; y < y1; y++)
                for (size_t x = x0; x < x1; x++) {
                    const uint8_t *v = in + (y * w->in_w + x) * channels;
                    for (size_t c = 0; c < channels; c++)
                        o[c] = v[c] > o[c] ? v[c] : o[c];
                }
        }
    }
}

void fm_lookup_u8(uint8_t *x, size_t count, const uint8_t *table)
{
    for (size_t i = 0; i < count; i++)
        x[i] = table[x[i]];
}
