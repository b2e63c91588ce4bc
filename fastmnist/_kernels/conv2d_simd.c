/* Conv2d fast path: direct convolution over the padded input, register-blocked over a patch of up to
 * PATCH_H x PATCH_W output pixels and a panel of FM_NR output channels; see conv2d.h. As in the dense fast
 * path, a patch visits only the taps (k_y, k_x, in_c) where some of its pixels' inputs is nonzero: after a
 * ReLU and a pooling, 43% of them are zero for a 3 x 2 patch of the Deep-MNIST CNN's second conv. Square-ish
 * patches skip more than a row of 6 pixels (33%), as their windows overlap more. */
#include "conv2d.h"
#include "simd.h"

#define MAX_PIXELS 6 /* 6 pixels x 2 vectors = 12 accumulators, within AVX2's 16 registers */
#define PATCH_H 3
#define PATCH_W 2

size_t FM_FN(fm_conv2d_packed_size)(const fm_window *w) { return fm_conv2d_packed_size_for_width(w, FM_NR); }

void FM_FN(fm_conv2d_pack_f32)(float *packed, const float *kernel, const fm_window *w)
{
    fm_conv2d_pack_f32_for_width(packed, kernel, w, FM_NR);
}

/* Lists the taps where some of the `pixels` windows is nonzero: their offsets in a window in `offsets` and
 * their indices in a panel in `taps`; returns how many. A vector of taps at a time, like the dense path. */
static size_t list_nonzero_taps(uint32_t *offsets, uint32_t *taps, const float *const *window, size_t pixels,
                                const fm_window *w, size_t row_values)
{
    const size_t row_taps = w->k_w * w->in_c; /* k_x and in_c are contiguous in both layouts */
    size_t count = 0;
    for (size_t k_y = 0; k_y < w->k_h; k_y++) {
        size_t t = 0;
        for (; t + FM_VECTOR_WIDTH <= row_taps; t += FM_VECTOR_WIDTH) {
            const size_t offset = k_y * row_values + t, tap = k_y * row_taps + t;
            fm_ivec bits = fm_load_bits(window[0] + offset);
            for (size_t p = 1; p < pixels; p++)
                bits |= fm_load_bits(window[p] + offset);
            const unsigned lanes = fm_nonzero_lanes(bits);
            fm_append_lanes(taps, count, lanes, (uint32_t)tap);
            count = fm_append_lanes(offsets, count, lanes, (uint32_t)offset);
        }
        for (; t < row_taps; t++) {
            const size_t offset = k_y * row_values + t;
            int nonzero = 0;
            for (size_t p = 0; p < pixels; p++)
                nonzero |= window[p][offset] != 0.0f;
            offsets[count] = (uint32_t)offset;
            taps[count] = (uint32_t)(k_y * row_taps + t);
            count += (size_t)nonzero;
        }
    }
    return count;
}

/* `pixels` (<= MAX_PIXELS, a constant after inlining) output pixels, at `out[p]`, times one panel of output
 * channels, over the `count` taps listed in `offsets` and `taps`, or over every tap when they are NULL (a
 * constant too, so the dense loop has no indirection). */
FM_ALWAYS_INLINE void conv_block(size_t pixels, float *const *out, const float *const *window, const float *panel,
                                 const float *bias, const fm_window *w, size_t row_values, size_t out_c,
                                 fm_activation activation, const uint32_t *offsets, const uint32_t *taps,
                                 size_t count)
{
    fm_vec acc[MAX_PIXELS][2];
    for (size_t p = 0; p < pixels; p++) {
        acc[p][0] = fm_load(bias + out_c);
        acc[p][1] = fm_load(bias + out_c + FM_VECTOR_WIDTH);
    }
    if (offsets) {
        for (size_t i = 0; i < count; i++) {
            const size_t offset = offsets[i], tap = taps[i];
            const fm_vec w0 = fm_load(panel + tap * FM_NR);
            const fm_vec w1 = fm_load(panel + tap * FM_NR + FM_VECTOR_WIDTH);
            for (size_t p = 0; p < pixels; p++) {
                const fm_vec x = fm_broadcast(window[p][offset]);
                acc[p][0] = fm_madd(acc[p][0], x, w0);
                acc[p][1] = fm_madd(acc[p][1], x, w1);
            }
        }
    } else {
        const size_t row_taps = w->k_w * w->in_c;
        for (size_t k_y = 0; k_y < w->k_h; k_y++) {
            const float *k_row = panel + k_y * row_taps * FM_NR;
            const size_t row = k_y * row_values;
            for (size_t t = 0; t < row_taps; t++) {
                const fm_vec w0 = fm_load(k_row + t * FM_NR);
                const fm_vec w1 = fm_load(k_row + t * FM_NR + FM_VECTOR_WIDTH);
                for (size_t p = 0; p < pixels; p++) {
                    const fm_vec x = fm_broadcast(window[p][row + t]);
                    acc[p][0] = fm_madd(acc[p][0], x, w0);
                    acc[p][1] = fm_madd(acc[p][1], x, w1);
                }
            }
        }
    }
    const size_t stored = w->out_c - out_c < FM_NR ? w->out_c - out_c : FM_NR;
    for (size_t p = 0; p < pixels; p++)
        fm_store_activated(out[p] + out_c, acc[p][0], acc[p][1], stored, activation);
}

/* Output rows [row_begin, row_end) of `patch_h` (<= PATCH_H) rows, as patches of up to PATCH_W columns. */
static void conv_band(float *out, const float *padded, const float *packed, const float *bias, const fm_window *w,
                      size_t row_begin, size_t patch_h, fm_activation activation, uint32_t *active)
{
    const size_t row_values = fm_conv2d_padded_w(w) * w->in_c;
    const size_t taps = w->k_h * w->k_w * w->in_c, panel_size = taps * FM_NR;
    for (size_t x_begin = 0; x_begin < w->out_w; x_begin += PATCH_W) {
        const size_t patch_w = w->out_w - x_begin < PATCH_W ? w->out_w - x_begin : PATCH_W;
        const size_t pixels = patch_h * patch_w;
        const float *window[MAX_PIXELS]; /* each pixel's receptive field in the padded input */
        float *pixel_out[MAX_PIXELS];
        for (size_t p = 0; p < pixels; p++) {
            const size_t out_y = row_begin + p / patch_w, out_x = x_begin + p % patch_w;
            window[p] = padded + out_y * w->stride_y * row_values + out_x * w->stride_x * w->in_c;
            pixel_out[p] = out + (out_y * w->out_w + out_x) * w->out_c;
        }
        /* a narrow row of taps (a first conv on one channel) costs less to multiply out than to list */
        const size_t count = w->k_w * w->in_c < FM_VECTOR_WIDTH
                                 ? taps
                                 : list_nonzero_taps(active, active + taps, window, pixels, w, row_values);
        const uint32_t *offsets = count == taps ? NULL : active, *tap_list = active + taps;
        for (size_t out_c = 0; out_c < w->out_c; out_c += FM_NR) {
            const float *panel = packed + out_c / FM_NR * panel_size;
#define BLOCK_CALL(n)                                                                                        \
    do {                                                                                                     \
        if (offsets)                                                                                         \
            conv_block(n, pixel_out, window, panel, bias, w, row_values, out_c, activation, offsets,         \
                       tap_list, count);                                                                     \
        else                                                                                                 \
            conv_block(n, pixel_out, window, panel, bias, w, row_values, out_c, activation, NULL, NULL, taps); \
    } while (0)
            FM_WITH_CONSTANT_1_TO_6(pixels, BLOCK_CALL)
#undef BLOCK_CALL
        }
    }
}

void FM_FN(fm_conv2d_f32)(float *out, const float *padded, const float *packed, const float *bias,
                          const fm_window *w, size_t row_begin, size_t row_end, fm_activation activation,
                          uint32_t *active)
{
    for (size_t row = row_begin; row < row_end; row += PATCH_H)
        conv_band(out, padded, packed, bias, w, row, row_end - row < PATCH_H ? row_end - row : PATCH_H, activation,
                  active);
}
