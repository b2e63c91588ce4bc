/* Conv2d fast path: direct convolution over the padded input, register-blocked over MAX_PIXELS neighbouring
 * output pixels of a row and a panel of FM_NR output channels; see conv2d.h. */
#include "conv2d.h"
#include "simd.h"
#include "activation.h"

#define MAX_PIXELS 4 /* 4 pixels x 2 vectors = 8 accumulators */

size_t FM_FN(fm_conv2d_packed_size)(const fm_window *w)
{
    return (w->out_c + FM_NR - 1) / FM_NR * FM_NR * w->k_h * w->k_w * w->in_c;
}

/* packed[panel][k_y][k_x][in_c][j] = kernel[k_y][k_x][in_c][panel * FM_NR + j], zero past out_c. */
void FM_FN(fm_conv2d_pack_f32)(float *packed, const float *kernel, const fm_window *w)
{
    const size_t panels = (w->out_c + FM_NR - 1) / FM_NR;
    const size_t taps = w->k_h * w->k_w * w->in_c;
    for (size_t panel = 0; panel < panels; panel++)
        for (size_t t = 0; t < taps; t++)
            for (size_t j = 0; j < FM_NR; j++) {
                const size_t out_c = panel * FM_NR + j;
                packed[(panel * taps + t) * FM_NR + j] = out_c < w->out_c ? kernel[t * w->out_c + out_c] : 0.0f;
            }
}

FM_ALWAYS_INLINE void store_pixel(float *y, fm_vec lo, fm_vec hi, size_t count, fm_activation activation)
{
    if (activation == FM_ACTIVATION_RELU) {
        lo = fm_relu(lo);
        hi = fm_relu(hi);
    }
    if (count == FM_NR) {
        fm_store(y, lo);
        fm_store(y + FM_VECTOR_WIDTH, hi);
    } else {
        float tmp[FM_NR];
        fm_store(tmp, lo);
        fm_store(tmp + FM_VECTOR_WIDTH, hi);
        memcpy(y, tmp, count * sizeof(float));
    }
    if (activation == FM_ACTIVATION_ELU)
        fm_activation_f32(y, count, activation);
}

/* `pixels` (<= MAX_PIXELS, a constant after inlining) output pixels from (out_y, out_x) on, one panel. */
FM_ALWAYS_INLINE void conv_block(size_t pixels, float *out, const float *padded, const float *panel,
                                 const float *bias, const fm_window *w, size_t padded_w,
                                 size_t out_y, size_t out_x, size_t out_c, fm_activation activation)
{
    fm_vec acc[MAX_PIXELS][2];
    for (size_t p = 0; p < pixels; p++) {
        acc[p][0] = fm_load(bias + out_c);
        acc[p][1] = fm_load(bias + out_c + FM_VECTOR_WIDTH);
    }
    const size_t in_c = w->in_c;
    const size_t pixel_step = w->stride_x * in_c;
    for (size_t k_y = 0; k_y < w->k_h; k_y++) {
        const float *row = padded + ((out_y * w->stride_y + k_y) * padded_w + out_x * w->stride_x) * in_c;
        const float *k_row = panel + k_y * w->k_w * in_c * FM_NR;
        for (size_t t = 0; t < w->k_w * in_c; t++) { /* k_x and in_c are contiguous in both layouts */
            const fm_vec w0 = fm_load(k_row + t * FM_NR);
            const fm_vec w1 = fm_load(k_row + t * FM_NR + FM_VECTOR_WIDTH);
            for (size_t p = 0; p < pixels; p++) {
                const fm_vec x = fm_broadcast(row[p * pixel_step + t]);
                acc[p][0] += x * w0;
                acc[p][1] += x * w1;
            }
        }
    }
    const size_t count = w->out_c - out_c < FM_NR ? w->out_c - out_c : FM_NR;
    for (size_t p = 0; p < pixels; p++)
        store_pixel(out + (out_y * w->out_w + out_x + p) * w->out_c + out_c, acc[p][0], acc[p][1], count, activation);
}

void FM_FN(fm_conv2d_f32)(float *out, const float *padded, const float *packed, const float *bias,
                          const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation)
{
    const size_t padded_w = fm_conv2d_padded_w(w);
    const size_t panel_size = w->k_h * w->k_w * w->in_c * FM_NR;
    for (size_t out_y = row_begin; out_y < row_end; out_y++)
        for (size_t out_c = 0; out_c < w->out_c; out_c += FM_NR) {
            const float *panel = packed + out_c / FM_NR * panel_size;
            size_t out_x = 0;
            for (; out_x + MAX_PIXELS <= w->out_w; out_x += MAX_PIXELS)
                conv_block(MAX_PIXELS, out, padded, panel, bias, w, padded_w, out_y, out_x, out_c, activation);
            switch (w->out_w - out_x) {
            case 3: conv_block(3, out, padded, panel, bias, w, padded_w, out_y, out_x, out_c, activation); break;
            case 2: conv_block(2, out, padded, panel, bias, w, padded_w, out_y, out_x, out_c, activation); break;
            case 1: conv_block(1, out, padded, panel, bias, w, padded_w, out_y, out_x, out_c, activation); break;
            default: break;
            }
        }
}
