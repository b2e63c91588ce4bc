#include "zeropad2d.h"

void fm_zeropad2d_f32(float *out, const float *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t row_values = w->out_w * w->out_c, left = w->pad_left * w->in_c, middle = w->in_w * w->in_c;
    /* plain loops rather than memset and memcpy: the kernels need no <string.h> */
    for (size_t out_y = row_begin; out_y < row_end; out_y++) {
        float *row = out + out_y * row_values;
        const int inside = out_y >= w->pad_top && out_y < w->pad_top + w->in_h;
        const float *from = inside ? in + (out_y - w->pad_top) * middle : NULL;
        for (size_t i = 0; i < row_values; i++)
            row[i] = from && i >= left && i < left + middle ? from[i - left] : 0.0f;
    }
}
