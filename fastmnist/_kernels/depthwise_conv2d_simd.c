/* Depthwise conv2d fast path; see depthwise_conv2d.h. Each output channel has its own filter, so there is no
 * reduction across channels to block: a pixel's channels are FM_NR at a time in two vectors, each tap one
 * multiply-add of an input vector by a kernel vector, the taps in the order of the scalar path. */
#include "depthwise_conv2d.h"

#include "conv2d.h"
#include "simd.h"

_Static_assert(FM_DEPTHWISE_CHANNEL_ALIGN % FM_NR == 0, "a pixel's channels must be whole panels of FM_NR");

void FM_FN(fm_depthwise_conv2d_f32)(float *out, const float *padded, const float *packed, const float *bias,
                                    const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation)
{
    const size_t channels = fm_depthwise_channels(w->out_c);
    const size_t row_values = fm_conv2d_padded_w(w) * channels;
    for (size_t out_y = row_begin; out_y < row_end; out_y++)
        for (size_t out_x = 0; out_x < w->out_w; out_x++) {
            const float *window = padded + out_y * w->stride_y * row_values + out_x * w->stride_x * channels;
            float *y = out + (out_y * w->out_w + out_x) * w->out_c;
            for (size_t c = 0; c < w->out_c; c += FM_NR) {
                fm_vec lo = fm_load(bias + c), hi = fm_load(bias + c + FM_VECTOR_WIDTH);
                for (size_t k_y = 0; k_y < w->k_h; k_y++)
                    for (size_t k_x = 0; k_x < w->k_w; k_x++) {
                        const float *x = window + k_y * row_values + k_x * channels + c;
                        const float *k = packed + (k_y * w->k_w + k_x) * channels + c;
                        lo = fm_madd(lo, fm_load(x), fm_load(k));
                        hi = fm_madd(hi, fm_load(x + FM_VECTOR_WIDTH), fm_load(k + FM_VECTOR_WIDTH));
                    }
                fm_store_activated(y + c, lo, hi, w->out_c - c < FM_NR ? w->out_c - c : FM_NR, activation);
            }
        }
}
