/* The requantisation of an int32 accumulator to an 8-bit activation, as gemmlowp and TFLite define it:
 *   y = clamp(zero_point + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, multiplier), shift), lo, hi)
 * with the real multiplier in_scale * kernel_scale / out_scale = multiplier * 2^-31 * 2^-shift, multiplier in
 * [2^30, 2^31) and shift in [0, 31] (the format keeps real multipliers below 1, so there is no left shift and
 * the high multiply cannot saturate). The high multiply rounds to nearest with ties up: gemmlowp's nudge (2^30,
 * or 1 - 2^30 below zero, then a division rounding toward zero) is exactly floor((acc * multiplier + 2^30) / 2^31),
 * which is how it is computed here. The right shift rounds to nearest with ties away from zero.
 *
 * It is written once, for every path: FM_DEFINE_REQUANTIZE instantiates it for plain int32_t and for GCC
 * vectors of it alike, using only operations that mean the same on both (+, -, &, >>; a comparison would give
 * 1 on a scalar and -1 on a vector). Only the high multiply is given per type: a vector path computes the same
 * integers with its own instructions (simd_s8.h). */
#ifndef FM_REQUANTIZE_H
#define FM_REQUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* name(acc, multiplier, shift, mask): the rounded acc * multiplier * 2^-31 * 2^-shift, before the zero point
 * and the clamp; mask = 2^shift - 1. i32: the type; HIGH_MUL(acc, multiplier): floor((acc * multiplier +
 * 2^30) / 2^31), which fits in 32 bits because multiplier < 2^31. */
#define FM_DEFINE_REQUANTIZE(name, i32, HIGH_MUL)                                                           \
    static inline __attribute__((always_inline)) i32 name(i32 acc, i32 multiplier, i32 shift, i32 mask)    \
    {                                                                                                       \
        const i32 high = HIGH_MUL(acc, multiplier);                                                         \
        /* divide by 2^shift, rounding half away from zero: up when the remainder exceeds the threshold */  \
        const i32 threshold = (mask >> 1) - (high >> 31);                                                   \
        return (high >> shift) - ((threshold - (high & mask)) >> 31);                                       \
    }

#define FM_HIGH_MUL_SCALAR(acc, multiplier) ((int32_t)(((int64_t)(acc) * (multiplier) + (1LL << 30)) >> 31))
FM_DEFINE_REQUANTIZE(fm_requantize_s32, int32_t, FM_HIGH_MUL_SCALAR)

/* How a kernel turns its accumulators into outputs. Per output channel arrays are padded with zeros to
 * whole vectors of the widest path (FM_S8_CHANNEL_ALIGN). */
typedef struct {
    const int32_t *multiplier, *shift, *mask; /* per output channel */
    int32_t zero_point, lo, hi;               /* y = clamp(zero_point + requantized, lo, hi) */
    const uint8_t *table;                     /* then y = table[y] when not NULL (a lookup activation) */
    const float *dequantize;                  /* not NULL: write float acc * dequantize[c] instead (logits) */
} fm_requant;

#define FM_S8_CHANNEL_ALIGN 64

/* Output channel c of accumulator acc, written to element `index` of `out` (uint8, or float logits). */
static inline void fm_requant_store(void *out, size_t index, int32_t acc, size_t c, const fm_requant *rq)
{
    if (rq->dequantize) {
        ((float *)out)[index] = (float)acc * rq->dequantize[c];
        return;
    }
    int32_t y = rq->zero_point + fm_requantize_s32(acc, rq->multiplier[c], rq->shift[c], rq->mask[c]);
    y = y < rq->lo ? rq->lo : y > rq->hi ? rq->hi : y;
    ((uint8_t *)out)[index] = rq->table ? rq->table[y] : (uint8_t)y;
}

#endif
