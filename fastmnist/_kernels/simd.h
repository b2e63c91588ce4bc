/* The vector type of a fast-path translation unit. Each *_simd.c file is compiled once per ISA, with that
 * ISA's compiler flags and FM_ISA_SUFFIX / FM_VECTOR_WIDTH defined by the build (setup.py); GCC and Clang
 * vector extensions then become that ISA's instructions. */
#ifndef FM_SIMD_H
#define FM_SIMD_H

#include <stdint.h>

#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "common.h"

#if !defined(FM_ISA_SUFFIX) || !defined(FM_VECTOR_WIDTH)
#error "compile fast paths with FM_ISA_SUFFIX and FM_VECTOR_WIDTH defined (see setup.py)"
#endif

#define FM_CONCAT_(a, b) a##__##b
#define FM_CONCAT(a, b) FM_CONCAT_(a, b)
#define FM_FN(name) FM_CONCAT(name, FM_ISA_SUFFIX) /* fm_dense_f32 -> fm_dense_f32__avx2 */

#define FM_ALWAYS_INLINE static inline __attribute__((always_inline))

/* The compiler's own memcpy, which needs no <string.h>: the C that the exporter writes includes no header
 * beyond <math.h>, <stddef.h> and <stdint.h> (and an ISA's intrinsics in its fast path). */
#define fm_memcpy __builtin_memcpy

typedef float fm_vec __attribute__((vector_size(FM_VECTOR_WIDTH * 4)));
typedef int fm_ivec __attribute__((vector_size(FM_VECTOR_WIDTH * 4)));

/* Runs CALL(n) with n = `count` (1 to 6) as a constant, so that an always-inlined kernel taking n as its
 * block size is compiled, unrolled, for each; does nothing for another count. */
#define FM_WITH_CONSTANT_1_TO_6(count, CALL) \
    switch (count) {                         \
    case 6: CALL(6); break;                  \
    case 5: CALL(5); break;                  \
    case 4: CALL(4); break;                  \
    case 3: CALL(3); break;                  \
    case 2: CALL(2); break;                  \
    case 1: CALL(1); break;                  \
    default: break;                          \
    }

/* The same for 1 to 12. */
#define FM_WITH_CONSTANT_1_TO_12(count, CALL)     \
    switch (count) {                              \
    case 12: CALL(12); break;                     \
    case 11: CALL(11); break;                     \
    case 10: CALL(10); break;                     \
    case 9: CALL(9); break;                       \
    case 8: CALL(8); break;                       \
    case 7: CALL(7); break;                       \
    default: FM_WITH_CONSTANT_1_TO_6(count, CALL) \
    }

/* Two vectors of output channels per register tile: enough independent accumulators to hide FMA latency. */
#define FM_NR (2 * FM_VECTOR_WIDTH)

FM_ALWAYS_INLINE fm_vec fm_load(const float *p)
{
    fm_vec v;
    fm_memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

FM_ALWAYS_INLINE void fm_store(float *p, fm_vec v) { fm_memcpy(p, &v, sizeof v); }

/* acc + a * b with one rounding where the ISA has a fused multiply-add. Spelt out rather than left to
 * -ffp-contract, because compilers tuned for some CPUs split accumulation chains into a multiply and an add:
 * every loop must round alike, so that an image's result does not depend on which kernel loop (single row
 * or block) it went through. */
FM_ALWAYS_INLINE fm_vec fm_madd(fm_vec acc, fm_vec a, fm_vec b)
{
#if FM_VECTOR_WIDTH == 16 && defined(__AVX512F__)
    return (fm_vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)acc);
#elif FM_VECTOR_WIDTH == 8 && defined(__FMA__)
    return (fm_vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)acc);
#elif FM_VECTOR_WIDTH == 4 && defined(__ARM_FEATURE_FMA)
    return (fm_vec)vfmaq_f32((float32x4_t)acc, (float32x4_t)a, (float32x4_t)b);
#else
    return acc + a * b;
#endif
}

/* The bits of 8 (or 16, or 4) floats, for testing them against zero without a float compare. */
FM_ALWAYS_INLINE fm_ivec fm_load_bits(const float *p)
{
    fm_ivec v;
    fm_memcpy(&v, p, sizeof v);
    return v;
}

/* Bit j set when the float whose bits are in lane j is nonzero (NaN included; -0 counts as zero). */
FM_ALWAYS_INLINE unsigned fm_nonzero_lanes(fm_ivec bits)
{
    bits &= 0x7fffffff;
#if FM_VECTOR_WIDTH == 16 && defined(__AVX512F__)
    return (unsigned)_mm512_test_epi32_mask((__m512i)bits, (__m512i)bits);
#elif FM_VECTOR_WIDTH == 8 && defined(__AVX__)
    return (unsigned)_mm256_movemask_ps((__m256)(bits != 0));
#elif FM_VECTOR_WIDTH == 4 && defined(__ARM_NEON)
    return vaddvq_u32(vandq_u32((uint32x4_t)(bits != 0), (uint32x4_t){1, 2, 4, 8}));
#else
    unsigned lanes = 0;
    for (int j = 0; j < FM_VECTOR_WIDTH; j++)
        lanes |= (unsigned)(bits[j] != 0) << j;
    return lanes;
#endif
}

typedef uint32_t fm_u32x4 __attribute__((vector_size(16)));

/* Writes base + j for each bit j set in `lanes` (FM_VECTOR_WIDTH bits) to list[count...]; returns the new
 * count. It stores four entries at a time, listed or not, so the list needs room for the lanes of this
 * call even when they are not all set. Branch-free, as which lanes are set is data. */
FM_ALWAYS_INLINE size_t fm_append_lanes(uint32_t *list, size_t count, unsigned lanes, uint32_t base)
{
    static const fm_u32x4 set_lanes[16] = {{0}, {0}, {1}, {0, 1}, {2}, {0, 2}, {1, 2}, {0, 1, 2},
                                           {3}, {0, 3}, {1, 3}, {0, 1, 3}, {2, 3}, {0, 2, 3}, {1, 2, 3}, {0, 1, 2, 3}};
    static const unsigned char set_count[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    for (unsigned nibble = 0; nibble < FM_VECTOR_WIDTH; nibble += 4) {
        const unsigned bits = (lanes >> nibble) & 15;
        const fm_u32x4 entries = set_lanes[bits] + (base + nibble);
        fm_memcpy(list + count, &entries, sizeof entries);
        count += set_count[bits];
    }
    return count;
}

/* x - 0 is exact for every x (unlike x + 0, which turns -0 into +0), so compilers fold it to a plain splat */
FM_ALWAYS_INLINE fm_vec fm_broadcast(float x) { return x - (fm_vec){0}; }

FM_ALWAYS_INLINE fm_vec fm_relu(fm_vec v) { return (fm_vec)((fm_ivec)v & (v > (fm_vec){0})); }

/* Lane by lane, a where a > b, else b: so a NaN in b is kept and a NaN in a is not. */
FM_ALWAYS_INLINE fm_vec fm_max(fm_vec a, fm_vec b)
{
    const fm_ivec a_larger = a > b;
    return (fm_vec)((a_larger & (fm_ivec)a) | (~a_larger & (fm_ivec)b));
}

/* x = n ln2 + r with |r| <= ln2/2: returns expm1(r), by its degree-8 Taylor polynomial (truncation below
 * 1e-9), and 2^n in `power`. x must be at least -87, so that 2^n is a normal number. */
FM_ALWAYS_INLINE fm_vec fm_expm1_reduced(fm_vec x, fm_vec *power)
{
    const fm_vec round_magic = fm_broadcast(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    const fm_vec n = (x * fm_broadcast(1.44269504f) + round_magic) - round_magic;
    const fm_vec r = (x - n * fm_broadcast(0.693145752f)) - n * fm_broadcast(1.42860677e-6f); /* ln2 = hi + lo */
    fm_vec p = fm_broadcast(1.0f / 40320);
    p = p * r + fm_broadcast(1.0f / 5040);
    p = p * r + fm_broadcast(1.0f / 720);
    p = p * r + fm_broadcast(1.0f / 120);
    p = p * r + fm_broadcast(1.0f / 24);
    p = p * r + fm_broadcast(1.0f / 6);
    p = p * r + fm_broadcast(0.5f);
    *power = (fm_vec)((__builtin_convertvector(n, fm_ivec) + 127) << 23);
    return p * r * r + r;
}

/* expm1(x) for x <= 0, within a few ulp of 1: 2^n expm1(r) + (2^n - 1). Below -30 the result is -1 in
 * float32, so x is clamped there. */
FM_ALWAYS_INLINE fm_vec fm_expm1_nonpositive(fm_vec x)
{
    fm_vec power;
    const fm_vec p = fm_expm1_reduced(fm_max(fm_broadcast(-30.0f), x), &power);
    return power * p + (power - fm_broadcast(1.0f));
}

/* exp(x) for x <= 0 (-inf included), within a few ulp: 2^n expm1(r) + 2^n. Below -87 it is 0, one step
 * short of the subnormal results (below 1.2e-38) that a library exp would give. NaN stays NaN. */
FM_ALWAYS_INLINE fm_vec fm_exp_nonpositive(fm_vec x)
{
    const fm_vec floor = fm_broadcast(-87.0f);
    fm_vec power;
    const fm_vec p = fm_expm1_reduced(fm_max(floor, x), &power);
    return (fm_vec)(~(fm_ivec)(x < floor) & (fm_ivec)(power * p + power));
}

/* Lane by lane, a where mask is set, else b. */
FM_ALWAYS_INLINE fm_vec fm_select(fm_ivec mask, fm_vec a, fm_vec b)
{
    return (fm_vec)((mask & (fm_ivec)a) | (~mask & (fm_ivec)b));
}

FM_ALWAYS_INLINE fm_ivec fm_sign_bits(fm_vec v) { return (fm_ivec)v & (int)0x80000000; }
FM_ALWAYS_INLINE fm_vec fm_abs(fm_vec v) { return (fm_vec)((fm_ivec)v & 0x7fffffff); }

/* The vector activations. Their accuracy, with u = 2^-24 (one ulp of 1 is 2u) and the exp and expm1 above
 * within 2 ulp (4u) of the exact result, each a sum of rounding errors of relative size u at most:
 *   relu, hard_sigmoid: the scalar path's arithmetic, exact but for one rounding (of alpha x + beta);
 *   elu, selu:   x > 0: at most 2 roundings; else expm1 (4u) times alpha (u, and u for selu's scale): 6u;
 *   sigmoid:     e = exp(-|x|) (4u), s = 1 / (1 + e) (2u + 4u e / (1 + e) <= 4u); x < 0: e s, 9u; below -87
 *                e is 0 where the true value is under 1.7e-38;
 *   silu:        x sigmoid(x), 10u, and under 87 * 1.7e-38 below -87;
 *   tanh:        e = expm1(-2|x|) (4u), -e / (2 + e): at most twice e's error plus 2 roundings, 10u;
 *   softplus:    max(x, 0) + log1p(exp(-|x|)), log1p(e) = 2 atanh(e / (2 + e)) by its series to the 13th
 *                power (truncation under 2e-8 relative): 12u, and 1.7e-38 absolute below -87;
 *   gelu tanh:   x sigmoid(2 y), 2 y = x (c1 + c2 x^2) rounded within 4u |2 y|, which sigmoid turns into
 *                4u |2 y| relative for negative y: 11u + 4u |2 y|;
 *   gelu:        0.5 x erfc(-x / sqrt2), erfc(t) = exp(-t^2) R(s), s = 1 / (1 + t / 2), R a degree-10
 *                polynomial fitted to erfc(t) exp(t^2) (within 5e-9 relative for t <= 9.4, 4u evaluated
 *                in float32); t^2 = x^2 / 2 is carried with its rounding error so that exp(-t^2) keeps 4u: 24u
 *                in all, and under 1e-36 absolute below x = -13.2, where exp(-t^2) becomes 0.
 * The tests bound each against the float64 reference with these figures. */

/* relu with Keras' parameters (see common.h); plain relu keeps its single mask */
FM_ALWAYS_INLINE fm_vec fm_relu_general(fm_vec v, fm_activation a)
{
    const fm_vec below = a.alpha == 0.0f ? (fm_vec){0} : fm_broadcast(a.alpha) * (v - fm_broadcast(a.beta));
    const fm_vec kept = fm_select(v >= fm_broadcast(a.beta), v, below);
    return fm_select(v >= fm_broadcast(a.gamma), fm_broadcast(a.gamma), kept);
}

/* alpha expm1(x) for x <= 0, x for x > 0 */
FM_ALWAYS_INLINE fm_vec fm_elu(fm_vec v, float alpha)
{
    const fm_ivec positive = v > (fm_vec){0};
    const fm_vec negative_part = fm_expm1_nonpositive((fm_vec)(~positive & (fm_ivec)v));
    return fm_select(positive, v, fm_broadcast(alpha) * negative_part);
}

/* e = exp(-|x|), then 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0: nothing overflows */
FM_ALWAYS_INLINE fm_vec fm_sigmoid(fm_vec v)
{
    const fm_vec e = fm_exp_nonpositive(-fm_abs(v));
    const fm_vec s = fm_broadcast(1.0f) / (fm_broadcast(1.0f) + e);
    return fm_select(v < (fm_vec){0}, e * s, s);
}

/* tanh(|x|) = -expm1(-2|x|) / (2 + expm1(-2|x|)), with the sign of x: no cancellation near 0 */
FM_ALWAYS_INLINE fm_vec fm_tanh(fm_vec v)
{
    const fm_vec e = fm_expm1_nonpositive(fm_broadcast(-2.0f) * fm_abs(v));
    const fm_vec t = fm_abs(e / (fm_broadcast(2.0f) + e));
    return (fm_vec)((fm_ivec)t | fm_sign_bits(v));
}

/* log(1 + e) for 0 <= e <= 1: 2 atanh(z), z = e / (2 + e) <= 1/3, as 2 z sum_k z^2k / (2k + 1) for k <= 6
 * (the next term is below 2e-8 of the sum) */
FM_ALWAYS_INLINE fm_vec fm_log1p_unit(fm_vec e)
{
    const fm_vec z = e / (fm_broadcast(2.0f) + e), w = z * z;
    fm_vec p = fm_broadcast(1.0f / 13);
    p = fm_madd(fm_broadcast(1.0f / 11), p, w);
    p = fm_madd(fm_broadcast(1.0f / 9), p, w);
    p = fm_madd(fm_broadcast(1.0f / 7), p, w);
    p = fm_madd(fm_broadcast(1.0f / 5), p, w);
    p = fm_madd(fm_broadcast(1.0f / 3), p, w);
    p = fm_madd(fm_broadcast(1.0f), p, w);
    return fm_broadcast(2.0f) * z * p;
}

FM_ALWAYS_INLINE fm_vec fm_softplus(fm_vec v)
{
    const fm_vec positive_part = (fm_vec)((fm_ivec)v & (v > (fm_vec){0}));
    return positive_part + fm_log1p_unit(fm_exp_nonpositive(-fm_abs(v)));
}

/* 0.5 x (1 + tanh(y)) = x sigmoid(2 y), 2 y = x (c1 + c2 x^2), c1 = 2 sqrt(2 / pi), c2 = 0.044715 c1 */
FM_ALWAYS_INLINE fm_vec fm_gelu_tanh(fm_vec v)
{
    const fm_vec two_y = v * fm_madd(fm_broadcast(1.59576912f), fm_broadcast(0.0713548162f), v * v);
    return v * fm_sigmoid(two_y);
}

/* The standard normal CDF times x: Phi(x) = 0.5 erfc(-x / sqrt2) for x < 0 and 1 - 0.5 erfc(x / sqrt2)
 * otherwise, erfc(t) = exp(-t^2) R(s), s = 1 / (1 + t / 2), R fitted (see above). */
FM_ALWAYS_INLINE fm_vec fm_gelu(fm_vec v)
{
    static const float r[11] = {1.0032894e-05f, 0.28180876f, 0.28565985f, 0.22125112f, 0.29328725f, -0.2716267f,
                                0.7168215f, -1.00257f, 0.6658152f, -0.21996938f, 0.02951244f};
    /* beyond |x| = 20 Phi is 0 or 1 in float32; clamping keeps x^2 and its rounding error finite */
    const fm_vec c = fm_max(fm_broadcast(-20.0f), fm_select(v > fm_broadcast(20.0f), fm_broadcast(20.0f), v));
    const fm_vec t = fm_abs(c) * fm_broadcast(0.707106781f);
    const fm_vec s = fm_broadcast(1.0f) / fm_madd(fm_broadcast(1.0f), t, fm_broadcast(0.5f));
    fm_vec p = fm_broadcast(r[10]);
    for (int i = 9; i >= 0; i--)
        p = fm_madd(fm_broadcast(r[i]), p, s);
    const fm_vec square = c * c;
    const fm_vec square_error = fm_madd(-square, c, c); /* exact: x^2 = square + square_error */
    const fm_vec half_square = fm_broadcast(0.5f) * square;
    const fm_vec gauss = fm_exp_nonpositive(-half_square) * fm_madd(fm_broadcast(1.0f), fm_broadcast(-0.5f), square_error);
    const fm_vec half_erfc = fm_broadcast(0.5f) * gauss * p;
    return v * fm_select(c < (fm_vec){0}, half_erfc, fm_broadcast(1.0f) - half_erfc);
}

/* One vector of `activation` (softmax and linear leave the values). */
FM_ALWAYS_INLINE fm_vec fm_activate(fm_vec v, fm_activation a)
{
    switch (a.kind) {
    case FM_ACT_RELU: return fm_is_plain_relu(a) ? fm_relu(v) : fm_relu_general(v, a);
    case FM_ACT_ELU: return fm_elu(v, a.alpha);
    case FM_ACT_SELU: return fm_broadcast(1.05070099f) * fm_elu(v, 1.67326324f);
    case FM_ACT_TANH: return fm_tanh(v);
    case FM_ACT_SIGMOID: return fm_sigmoid(v);
    case FM_ACT_HARD_SIGMOID: {
        const fm_vec y = fm_madd(fm_broadcast(a.beta), fm_broadcast(a.alpha), v);
        return fm_select(y < (fm_vec){0}, (fm_vec){0}, fm_select(y > fm_broadcast(1.0f), fm_broadcast(1.0f), y));
    }
    case FM_ACT_SILU: return v * fm_sigmoid(v);
    case FM_ACT_GELU: return fm_gelu(v);
    case FM_ACT_GELU_TANH: return fm_gelu_tanh(v);
    case FM_ACT_SOFTPLUS: return fm_softplus(v);
    case FM_ACT_LINEAR:
    case FM_ACT_SOFTMAX: break;
    }
    return v;
}

/* Applies `activation` to a panel of FM_NR outputs held in two vectors and stores the first `count`
 * (<= FM_NR) of them: fewer at the right edge of the outputs. */

/* Out of line, so that the kernels' hot loops, inlined for each block size, stay small; every kernel reaches
 * the same code, so an output's activation does not depend on the loop that computed it. */
static __attribute__((noinline, unused)) void fm_activate_pair(fm_vec *lo, fm_vec *hi, fm_activation activation)
{
    *lo = fm_activate(*lo, activation);
    *hi = fm_activate(*hi, activation);
}

FM_ALWAYS_INLINE void fm_store_activated(float *y, fm_vec lo, fm_vec hi, size_t count, fm_activation activation)
{
    if (fm_is_plain_relu(activation)) {
        lo = fm_relu(lo);
        hi = fm_relu(hi);
    } else if (activation.kind != FM_ACT_LINEAR && activation.kind != FM_ACT_SOFTMAX) {
        fm_activate_pair(&lo, &hi, activation);
    }
    if (count == FM_NR) {
        fm_store(y, lo);
        fm_store(y + FM_VECTOR_WIDTH, hi);
    } else {
        float tmp[FM_NR];
        fm_store(tmp, lo);
        fm_store(tmp + FM_VECTOR_WIDTH, hi);
        fm_memcpy(y, tmp, count * sizeof(float));
    }
}

#endif
