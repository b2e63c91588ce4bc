/* Quantized 2-D convolution, NHWC uint8 activations, HWIO int8 kernel, one image: acc = bias + the sum over
 * the taps inside the image of (in - in_zero_point) * kernel, requantized by requantize.h. A tap in the
 * padding adds nothing: it is the real value 0, which the zero point represents. */
#ifndef FM_CONV2D_S8_H
#define FM_CONV2D_S8_H

#include <stdint.h>

#include "common.h"
#include "requantize.h"

/* Scalar path, the definition: output pixels [pixel_begin, pixel_end), straight from the unpadded input. */
void fm_conv2d_s8(uint8_t *out, const uint8_t *in, const int8_t *kernel, const int32_t *bias,
                  int32_t in_zero_point, const fm_window *w, size_t pixel_begin, size_t pixel_end,
                  const fm_requant *rq);

/* The input the fast paths read: padded (fm_conv2d_padded_h/w of conv2d.h) with the zero point, so that a
 * tap in the padding adds (zero_point - zero_point) * weight = 0, plus FM_CONV2D_S8_SLACK bytes. Writes
 * padded rows [row_begin, row_end). */
#define FM_CONV2D_S8_SLACK 64
size_t fm_conv2d_s8_padded_size(const fm_window *w);
void fm_conv2d_pad_u8(uint8_t *padded, const uint8_t *in, uint8_t zero_point, const fm_window *w,
                      size_t row_begin, size_t row_end);

/* Fast paths compute output rows [row_begin, row_end) from the padded input, reading each kernel row's
 * k_w * in_c taps in groups of 4 (past the window's row end: those weights are 0), a kernel packed
 * by the matching pack function and the folded, padded bias (as in dense_s8.h). They skip the groups of taps
 * that are zero for a whole patch of pixels, listing the others in `scratch`: fm_conv2d_s8_scratch_size(w)
 * entries, private to the calling thread. */
static inline size_t fm_conv2d_s8_row_groups(const fm_window *w) { return (w->k_w * w->in_c + 3) / 4; }
static inline size_t fm_conv2d_s8_scratch_size(const fm_window *w)
{
    /* the lists of the VNNI paths, or the AMX path's im2col rows: whole tiles of 16 rows of taps padded to 64,
     * and 64 bytes that its copies of short kernel rows may write past them */
    const size_t lists = 2 * w->k_h * fm_conv2d_s8_row_groups(w);
    const size_t im2col = ((w->out_h * w->out_w + 15) / 16 * 16 * ((w->k_h * w->k_w * w->in_c + 63) / 64 * 64) + 64) / 4;
    return lists > im2col ? lists : im2col;
}

#define FM_DECLARE_CONV2D_S8_FAST(isa)                                                                        \
    size_t fm_conv2d_s8_packed_size__##isa(const fm_window *w);                                              \
    void fm_conv2d_s8_pack__##isa(int8_t *packed, const int8_t *kernel, const fm_window *w);                 \
    void fm_conv2d_s8__##isa(uint8_t *out, const uint8_t *padded, const int8_t *packed,                      \
                             const int32_t *folded_bias, const fm_window *w, size_t row_begin, size_t row_end, \
                             const fm_requant *rq, uint32_t *scratch);

FM_DECLARE_CONV2D_S8_FAST(avx2)
FM_DECLARE_CONV2D_S8_FAST(avxvnni)
FM_DECLARE_CONV2D_S8_FAST(avx512vnni)
FM_DECLARE_CONV2D_S8_FAST(neon_i8mm)
FM_DECLARE_CONV2D_S8_FAST(neon_dotprod)
FM_DECLARE_CONV2D_S8_FAST(amx)

#endif
