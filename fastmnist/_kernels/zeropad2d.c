#include "zeropad2d.h"

#include <string.h>

void fm_zeropad2d_f32(float *out, const float *in, const fm_window *w, size_t row_begin, size_t row_end)
{
    const size_t row_values = w->out_w * w->out_c, left = w->pad_left * w->in_c, middle = w->in_w * w->in_c;
    for (size_t out_y = row_begin; out_y < row_end; out_y++) {
        float *row = out + out_y * row_values;
        if (out_y < w->pad_top || out_y >= w->pad_top + w->in_h) {
            memset(row, 0, row_values * sizeof(float));
            continue;
        }
        memset(row, 0, left * sizeof(float));
        memcpy(row + left, in + (out_y - w->pad_top) * middle, middle * sizeof(float));
        memset(row + left + middle, 0, (row_values - left - middle) * sizeof(float));
    }
}
