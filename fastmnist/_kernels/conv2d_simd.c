/* Conv2d fast path: direct convolution over the padded input, register-blocked over MAX_PIXELS neighbouring
 * output pixels of a row and a panel of FM_NR output channels; see conv2d.h. */
#include "conv2d.h"
#include "simd.h"

#define MAX_PIXELS 6 /* 6 pixels x 2 vectors = 12 accumulators, within AVX2's 16 registers */

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

/* `pixels` (<= MAX_PIXELS, a constant after inlining) output pixels from `first` on, in row-major order (a
 * block may wrap onto the next row: no short blocks at row ends), times one panel of output channels. */
FM_ALWAYS_INLINE void conv_block(size_t pixels, float *out, const float *padded, const float *panel,
                                 const float *bias, const fm_window *w, size_t padded_w, size_t first, size_t out_c,
                                 fm_activation activation)
{
    const size_t in_c = w->in_c, row_values = padded_w * in_c;
    const float *window[MAX_PIXELS]; /* each pixel's receptive field in the padded input */
    fm_vec acc[MAX_PIXELS][2];
    for (size_t p = 0; p < pixels; p++) {
        const size_t out_y = (first + p) / w->out_w, out_x = (first + p) % w->out_w;
        window[p] = padded + out_y * w->stride_y * row_values + out_x * w->stride_x * in_c;
        acc[p][0] = fm_load(bias + out_c);
        acc[p][1] = fm_load(bias + out_c + FM_VECTOR_WIDTH);
    }
    for (size_t k_y = 0; k_y < w->k_h; k_y++) {
        const float *k_row = panel + k_y * w->k_w * in_c * FM_NR;
        const size_t row = k_y * row_values;
        for (size_t t = 0; t < w->k_w * in_c; t++) { /* k_x and in_c are contiguous in both layouts */
            const fm_vec w0 = fm_load(k_row + t * FM_NR);
            const fm_vec w1 = fm_load(k_row + t * FM_NR + FM_VECTOR_WIDTH);
            for (size_t p = 0; p < pixels; p++) {
                const fm_vec x = fm_broadcast(window[p][row + t]);
                acc[p][0] += x * w0;
                acc[p][1] += x * w1;
            }
        }
    }
    const size_t count = w->out_c - out_c < FM_NR ? w->out_c - out_c : FM_NR;
    for (size_t p = 0; p < pixels; p++)
        fm_store_activated(out + (first + p) * w->out_c + out_c, acc[p][0], acc[p][1], count, activation);
}

void FM_FN(fm_conv2d_f32)(float *out, const float *padded, const float *packed, const float *bias,
                          const fm_window *w, size_t pixel_begin, size_t pixel_end, fm_activation activation)
{
    const size_t padded_w = fm_conv2d_padded_w(w);
    const size_t panel_size = w->k_h * w->k_w * w->in_c * FM_NR;
    for (size_t out_c = 0; out_c < w->out_c; out_c += FM_NR) {
        const float *panel = packed + out_c / FM_NR * panel_size;
        size_t first = pixel_begin;
        for (; first + MAX_PIXELS <= pixel_end; first += MAX_PIXELS)
            conv_block(MAX_PIXELS, out, padded, panel, bias, w, padded_w, first, out_c, activation);
        switch (pixel_end - first) { /* the tail, each case specialised with a constant pixel count */
        case 5: conv_block(5, out, padded, panel, bias, w, padded_w, first, out_c, activation); break;
        case 4: conv_block(4, out, padded, panel, bias, w, padded_w, first, out_c, activation); break;
        case 3: conv_block(3, out, padded, panel, bias, w, padded_w, first, out_c, activation); break;
        case 2: conv_block(2, out, padded, panel, bias, w, padded_w, first, out_c, activation); break;
        case 1: conv_block(1, out, padded, panel, bias, w, padded_w, first, out_c, activation); break;
        default: break;
        }
    }
}
