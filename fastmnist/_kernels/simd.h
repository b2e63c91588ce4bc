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

FM_ALWAYS_INLINE fm_vec fm_elu(fm_vec v)
{
    const fm_ivec positive = v > (fm_vec){0};
    return (fm_vec)((positive & (fm_ivec)v) | (~positive & (fm_ivec)fm_expm1_nonpositive((fm_vec)(~positive & (fm_ivec)v))));
}

/* Applies relu or elu (softmax and linear leave the values) to a panel of FM_NR outputs held in two vectors
 * and stores the first `count` (<= FM_NR) of them: fewer at the right edge of the outputs. */
FM_ALWAYS_INLINE void fm_store_activated(float *y, fm_vec lo, fm_vec hi, size_t count, fm_activation activation)
{
    if (activation == FM_ACTIVATION_RELU) {
        lo = fm_relu(lo);
        hi = fm_relu(hi);
    } else if (activation == FM_ACTIVATION_ELU) {
        lo = fm_elu(lo);
        hi = fm_elu(hi);
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
