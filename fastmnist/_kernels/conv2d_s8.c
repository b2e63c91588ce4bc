#include "conv2d_s8.h"

#include "dense_s8.h"

void fm_conv2d_s8(uint8_t *out, const uint8_t *in, const int8_t *kernel, const int32_t *bias,
                  int32_t in_zero_point, const fm_window *w, size_t pixel_begin, size_t pixel_end,
                  const fm_requant *rq)
{
    for (size_t pixel = pixel_begin; pixel < pixel_end; pixel++) {
        const size_t out_y = pixel / w->out_w, out_x = pixel % w->out_w;
        for (size_t first = 0; first < w->out_c; first += FM_S8_SCALAR_BLOCK) {
            /* output channels [first, first + count), as in dense_s8.c: each input reads a contiguous run of
             * its row of the HWIO kernel */
            const size_t count = w->out_c - first < FM_S8_SCALAR_BLOCK ? w->out_c - first : FM_S8_SCALAR_BLOCK;
            int32_t acc[FM_S8_SCALAR_BLOCK];
            for (size_t out_c = 0; out_c < count; out_c++)
                acc[out_c] = bias[first + out_c];
            for (size_t k_y = 0; k_y < w->k_h; k_y++) {
                const ptrdiff_t in_y = (ptrdiff_t)(out_y * w->stride_y + k_y) - (ptrdiff_t)w->pad_top;
                if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h)
                    continue;
                for (size_t k_x = 0; k_x < w->k_w; k_x++) {
                    const ptrdiff_t in_x = (ptrdiff_t)(out_x * w->stride_x + k_x) - (ptrdiff_t)w->pad_left;
                    if (in_x < 0 || in_x >= (ptrdiff_t)w->in_w)
                        continue;
                    const uint8_t *x = in + ((size_t)in_y * w->in_w + (size_t)in_x) * w->in_c;
                    const int8_t *tap = kernel + (k_y * w->k_w + k_x) * w->in_c * w->out_c;
                    for (size_t in_c = 0; in_c < w->in_c; in_c++) {
                        const int32_t value = (int32_t)x[in_c] - in_zero_point;
                        if (value == 0)
                            continue; /* the input is the real value 0: its terms are exactly zero */
                        const int8_t *k = tap + in_c * w->out_c + first;
                        if (count == FM_S8_SCALAR_BLOCK)
                            fm_s8_multiply_add(acc, k, value, FM_S8_SCALAR_BLOCK);
                        else
                            fm_s8_multiply_add(acc, k, value, count);
                    }
                }
            }
            for (size_t out_c = 0; out_c < count; out_c++)
                fm_requant_store(out, pixel * w->out_c + first + out_c, acc[out_c], first + out_c, rq);
        }
    }
}

#include "conv2d.h"

size_t fm_conv2d_s8_padded_size(const fm_window *w)
{
    return fm_conv2d_padded_h(w) * fm_conv2d_padded_w(w) * w->in_c + FM_CONV2D_S8_SLACK;
}

/* plain loops rather than memset and memcpy: the kernels need no <string.h> */
void fm_conv2d_pad_u8(uint8_t *padded, const uint8_t *in, uint8_t zero_point, const fm_window *w,
                      size_t row_begin, size_t row_end)
{
    const size_t padded_w = fm_conv2d_padded_w(w), row_values = padded_w * w->in_c;
    const size_t copy_w = w->in_w < padded_w - w->pad_left ? w->in_w : padded_w - w->pad_left;
    for (size_t y = row_begin; y < row_end; y++) {
        uint8_t *row = padded + y * row_values;
        const ptrdiff_t in_y = (ptrdiff_t)y - (ptrdiff_t)w->pad_top;
        for (size_t i = 0; i < row_values; i++)
            row[i] = zero_point;
        if (in_y < 0 || in_y >= (ptrdiff_t)w->in_h)
            continue;
        const uint8_t *in_row = in + (size_t)in_y * w->in_w * w->in_c;
        for (size_t i = 0; i < copy_w * w->in_c; i++)
            row[w->pad_left * w->in_c + i] = in_row[i];
    }
    if (row_end == fm_conv2d_padded_h(w)) { /* the slack after the last row is read, times zero weights */
        for (size_t i = 0; i < FM_CONV2D_S8_SLACK; i++)
            padded[row_end * row_values + i] = zero_point;
    }
}
