/* Int8 conv2d fast path: direct convolution over the zero-point-padded input, register-blocked over a patch
 * of up to PATCH_H x PATCH_W output pixels and P panels of FM_S8_LANES output channels; see conv2d_s8.h.
 * Each kernel row's k_w * in_c taps are contiguous in the padded input, so they are read in groups of 4 for
 * fm_s8_dot4; a patch visits only the groups where some of its pixels' inputs are nonzero, as the dense
 * path does (the zero point of a ReLU output is 0). */
#include "conv2d_s8.h"
#include "simd_s8.h"

#include "conv2d.h"

#define W FM_S8_LANES
#define PATCH_H 2
#define PATCH_W 2
#define MAX_PIXELS (PATCH_H * PATCH_W)
#define MAX_PANELS 8

static size_t panels_of(const fm_window *w) { return (w->out_c + W - 1) / W; }
static size_t panel_size(const fm_window *w) { return w->k_h * fm_conv2d_s8_row_groups(w) * W * 4; }

size_t FM_S8_FN(fm_conv2d_s8_packed_size)(const fm_window *w) { return panels_of(w) * panel_size(w); }

/* packed[panel][k_y][g][j][b] = kernel[k_y][k_x][in_c][panel * W + position_output(j)] for the row tap
 * 4 g + b = k_x * in_c + in_c; 0 past the row's taps and past out_c; as fm_s8_pack_weight packs it. */
void FM_S8_FN(fm_conv2d_s8_pack)(int8_t *packed, const int8_t *kernel, const fm_window *w)
{
    const size_t row_groups = fm_conv2d_s8_row_groups(w), row_taps = w->k_w * w->in_c;
    for (size_t panel = 0; panel < panels_of(w); panel++)
        for (size_t k_y = 0; k_y < w->k_h; k_y++)
            for (size_t g = 0; g < row_groups; g++)
                for (size_t j = 0; j < W; j++)
                    for (size_t b = 0; b < 4; b++) {
                        const size_t tap = 4 * g + b, out_c = panel * W + fm_s8_position_output(j);
                        int8_t *to = packed + panel * panel_size(w) + ((k_y * row_groups + g) * W + j) * 4 + b;
                        *to = fm_s8_pack_weight(tap < row_taps && out_c < w->out_c
                                                    ? kernel[(k_y * row_taps + tap) * w->out_c + out_c] : 0);
                    }
}

/* Lists the groups where some of the `pixels` windows is nonzero: their offsets in a window in `offsets` and
 * their indices in a panel in `groups`; returns how many. A vector of groups at a time, then one by one to the
 * end of each kernel row (so that no read goes past the row's taps). */
static size_t list_nonzero_groups(uint32_t *offsets, uint32_t *groups, const uint8_t *const *window, size_t pixels,
                                  const fm_window *w, size_t row_values)
{
    const size_t row_groups = fm_conv2d_s8_row_groups(w);
    size_t count = 0;
    for (size_t k_y = 0; k_y < w->k_h; k_y++) {
        size_t g = 0;
        for (; g + W <= row_groups; g += W) {
            for (unsigned lanes = fm_s8_nonzero_groups(window, pixels, k_y * row_values + 4 * g); lanes;
                 lanes &= lanes - 1) {
                const size_t j = (size_t)__builtin_ctz(lanes);
                offsets[count] = (uint32_t)(k_y * row_values + 4 * (g + j));
                groups[count++] = (uint32_t)(k_y * row_groups + g + j);
            }
        }
        for (; g < row_groups; g++) {
            const size_t offset = k_y * row_values + 4 * g;
            uint32_t bytes = 0;
            for (size_t p = 0; p < pixels; p++)
                bytes |= fm_s8_load_u32(window[p] + offset);
            offsets[count] = (uint32_t)offset;
            groups[count] = (uint32_t)(k_y * row_groups + g);
            count += bytes != 0;
        }
    }
    return count;
}

/* `pixels` x `panels` (constants after inlining) accumulators from output channel out_c, over the `count`
 * listed groups; `correction`: the pixels' offset corrections (simd_s8.h). */
FM_S8_INLINE void conv_tile(size_t pixels, size_t panels, uint8_t *const *out, const uint8_t *const *window,
                            const int8_t *packed, size_t stride, const int32_t *bias, size_t out_c,
                            const fm_window *w, const fm_requant *rq, const uint32_t *offsets,
                            const uint32_t *groups, size_t count, const uint32_t *correction)
{
    fm_s8_acc acc[MAX_PIXELS][MAX_PANELS];
    for (size_t r = 0; r < pixels; r++)
        for (size_t p = 0; p < panels; p++)
            acc[r][p] = fm_s8_start(bias + out_c + p * W, correction, r);
    for (size_t i = 0; i < count; i++) {
        const size_t offset = offsets[i];
        const int8_t *weights = packed + groups[i] * W * 4;
        fm_s8_x x[MAX_PIXELS];
        for (size_t r = 0; r < pixels; r++)
            x[r] = fm_s8_broadcast(fm_s8_load_u32(window[r] + offset));
        for (size_t p = 0; p < panels; p++) {
            const fm_s8_w wv = fm_s8_load_w(weights + p * stride);
            for (size_t r = 0; r < pixels; r++)
                acc[r][p] = fm_s8_dot4(acc[r][p], x[r], wv);
        }
    }
    for (size_t r = 0; r < pixels; r++)
        for (size_t p = 0; p < panels; p++) {
            const size_t first = out_c + p * W;
            if (first < w->out_c)
                fm_s8_store(out[r], first, acc[r][p], first, w->out_c - first < W ? w->out_c - first : W, rq);
        }
}

static size_t panels_for(size_t pixels)
{
    const size_t panels = FM_S8_MAX_ACC / pixels;
    return panels < 1 ? 1 : panels > MAX_PANELS ? MAX_PANELS : panels;
}

#define TILE_CALL(R, P) \
    conv_tile(R, P, out, window, packed, stride, bias, out_c, w, rq, offsets, groups, count, correction)
#define PIXELS_CASE(R)                                 \
    case R:                                           \
        FM_S8_WITH_PANELS(R, panels, TILE_CALL)       \
        break;

static void patch_channels(size_t pixels, size_t panels, uint8_t *const *out, const uint8_t *const *window,
                           const int8_t *packed, size_t stride, const int32_t *bias, size_t out_c, const fm_window *w,
                           const fm_requant *rq, const uint32_t *offsets, const uint32_t *groups, size_t count,
                           const uint32_t *correction)
{
    switch (pixels) {
        PIXELS_CASE(1) PIXELS_CASE(2) PIXELS_CASE(3) PIXELS_CASE(4)
    default: break;
    }
}

void FM_S8_FN(fm_conv2d_s8)(uint8_t *out, const uint8_t *padded, const int8_t *packed, const int32_t *folded_bias,
                            const fm_window *w, size_t row_begin, size_t row_end, const fm_requant *rq,
                            uint32_t *scratch)
{
    const size_t row_values = fm_conv2d_padded_w(w) * w->in_c, stride = panel_size(w);
    const size_t total_groups = w->k_h * fm_conv2d_s8_row_groups(w);
    for (size_t y_begin = row_begin; y_begin < row_end; y_begin += PATCH_H) {
        const size_t patch_h = row_end - y_begin < PATCH_H ? row_end - y_begin : PATCH_H;
        for (size_t x_begin = 0; x_begin < w->out_w; x_begin += PATCH_W) {
            const size_t patch_w = w->out_w - x_begin < PATCH_W ? w->out_w - x_begin : PATCH_W;
            const size_t pixels = patch_h * patch_w;
            const uint8_t *window[MAX_PIXELS]; /* each pixel's receptive field in the padded input */
            uint8_t *pixel_out[MAX_PIXELS];
            for (size_t p = 0; p < pixels; p++) {
                const size_t out_y = y_begin + p / patch_w, out_x = x_begin + p % patch_w;
                window[p] = padded + out_y * w->stride_y * row_values + out_x * w->stride_x * w->in_c;
                pixel_out[p] = out + (out_y * w->out_w + out_x) * w->out_c;
            }
            uint32_t *offsets = scratch, *groups = scratch + total_groups;
            const size_t count = list_nonzero_groups(offsets, groups, window, pixels, w, row_values);
            uint32_t correction[MAX_PIXELS];
            fm_s8_offset_corrections(correction, window, pixels, offsets, count, 1);
            const size_t most = panels_for(pixels);
            for (size_t out_c = 0; out_c < w->out_c;) {
                const size_t left = panels_of(w) - out_c / W, panels = left < most ? left : most;
                patch_channels(pixels, panels, pixel_out, window, packed + out_c / W * stride, stride, folded_bias,
                               out_c, w, rq, offsets, groups, count, correction);
                out_c += panels * W;
            }
        }
    }
}
