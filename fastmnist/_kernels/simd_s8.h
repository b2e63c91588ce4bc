/* The vector primitives of the int8 fast paths. Each *_s8_simd.c file is compiled once per ISA with that
 * ISA's flags and FM_S8_ISA_SUFFIX defined by the build (setup.py). The one operation that differs is fm_dot4:
 * for each of FM_S8_LANES output channels, acc += the dot product of 4 uint8 inputs with that channel's 4 int8
 * weights. All paths give the same int32 sums; only the instruction count differs:
 *  - AVX-512 VNNI and AVX-VNNI: one VPDPBUSD (no saturation: the 4 products are summed in 32 bits);
 *  - AVX2: the bytes widened to 16 bits and VPMADDWD, whose 16 x 16-bit products summed in pairs are exact.
 *    VPMADDUBSW would take the bytes as they are, but it saturates each pair sum to 16 bits: 255 * 127 * 2
 *    exceeds 32767, so it would be exact only with 7-bit weights, which cost accuracy;
 *  - AArch64 with the int8 matrix extension (i8mm): one USDOT, unsigned x signed like VPDPBUSD;
 *  - AArch64 with only the dot product extension: one UDOT, unsigned x unsigned, on weights offset to unsigned
 *    (FM_S8_WEIGHT_OFFSET, below). */
#ifndef FM_SIMD_S8_H
#define FM_SIMD_S8_H

#include <stdint.h>
#include <string.h>

#include "requantize.h"

#ifndef FM_S8_ISA_SUFFIX
#error "compile the int8 fast paths with FM_S8_ISA_SUFFIX defined (see setup.py)"
#endif

#define FM_S8_CONCAT_(a, b) a##__##b
#define FM_S8_CONCAT(a, b) FM_S8_CONCAT_(a, b)
#define FM_S8_FN(name) FM_S8_CONCAT(name, FM_S8_ISA_SUFFIX) /* fm_dense_s8 -> fm_dense_s8__avx2 */
#define FM_S8_INLINE static inline __attribute__((always_inline))

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define FM_S8_LANES 16
#define FM_S8_MAX_ACC 16 /* accumulators of a register tile, of 32 registers */
typedef __m512i fm_s8_acc;
typedef __m512i fm_s8_x;
typedef __m512i fm_s8_w;
FM_S8_INLINE fm_s8_x fm_s8_broadcast(uint32_t x4) { return _mm512_set1_epi32((int)x4); }
FM_S8_INLINE fm_s8_w fm_s8_load_w(const int8_t *w) { return _mm512_loadu_si512(w); }
FM_S8_INLINE fm_s8_acc fm_s8_dot4(fm_s8_acc acc, fm_s8_x x, fm_s8_w w) { return _mm512_dpbusd_epi32(acc, x, w); }
#elif defined(__AVXVNNI__)
#define FM_S8_LANES 8
#define FM_S8_MAX_ACC 8 /* of 16 registers */
typedef __m256i fm_s8_acc;
typedef __m256i fm_s8_x;
typedef __m256i fm_s8_w;
FM_S8_INLINE fm_s8_x fm_s8_broadcast(uint32_t x4) { return _mm256_set1_epi32((int)x4); }
FM_S8_INLINE fm_s8_w fm_s8_load_w(const int8_t *w) { return _mm256_loadu_si256((const __m256i *)w); }
FM_S8_INLINE fm_s8_acc fm_s8_dot4(fm_s8_acc acc, fm_s8_x x, fm_s8_w w) { return _mm256_dpbusd_avx_epi32(acc, x, w); }
#elif defined(__AVX2__)
#define FM_S8_LANES 8
#define FM_S8_MAX_ACC 6 /* each also needs two widened weight vectors */
typedef __m256i fm_s8_acc;
typedef __m256i fm_s8_x; /* the 4 inputs as 16-bit values, in every 64-bit lane */
typedef struct {
    __m256i lo, hi; /* the weights of channels at positions 0-3 and 4-7, as 16-bit values */
} fm_s8_w;
FM_S8_INLINE fm_s8_x fm_s8_broadcast(uint32_t x4)
{
    return _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128((int)x4)));
}
FM_S8_INLINE fm_s8_w fm_s8_load_w(const int8_t *w)
{
    fm_s8_w v = {_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w)),
                 _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16)))};
    return v;
}
/* VPMADDWD leaves each position's sum in two lanes; VPHADDD adds them, in the order of FM_S8_POSITION below */
FM_S8_INLINE fm_s8_acc fm_s8_dot4(fm_s8_acc acc, fm_s8_x x, fm_s8_w w)
{
    return _mm256_add_epi32(acc, _mm256_hadd_epi32(_mm256_madd_epi16(w.lo, x), _mm256_madd_epi16(w.hi, x)));
}
#elif defined(__ARM_FEATURE_MATMUL_INT8)
#define FM_S8_LANES 4
#define FM_S8_MAX_ACC 16 /* of 32 registers */
typedef int32x4_t fm_s8_acc;
typedef uint8x16_t fm_s8_x;
typedef int8x16_t fm_s8_w;
FM_S8_INLINE fm_s8_x fm_s8_broadcast(uint32_t x4) { return vreinterpretq_u8_u32(vdupq_n_u32(x4)); }
FM_S8_INLINE fm_s8_w fm_s8_load_w(const int8_t *w) { return vld1q_s8(w); }
FM_S8_INLINE fm_s8_acc fm_s8_dot4(fm_s8_acc acc, fm_s8_x x, fm_s8_w w) { return vusdotq_s32(acc, x, w); }
#elif defined(__ARM_FEATURE_DOTPROD)
/* UDOT multiplies unsigned bytes by unsigned bytes, so the weights are packed as w + 128, in [0, 255]
 * (fm_s8_pack_weight), and each row's sums start 128 times the sum of its inputs lower
 * (fm_s8_offset_corrections): sum x (w + 128) - 128 sum x = sum x w, exactly, in the 32-bit arithmetic modulo
 * 2^32 that every path's int32 sums already are. The correction is summed over the same listed groups as the
 * products: a zero input adds 0 to both terms, so skipping the groups that are zero changes neither, and a
 * byte past a row's last input (whatever it holds) meets a packed 0 + 128, whose 128 x its correction takes
 * back. The other way round, inputs shifted to signed for SDOT, would need the correction per output channel
 * (128 times the sum of the visited weights), which the skipping of zero groups would make per block. */
#define FM_S8_LANES 4
#define FM_S8_MAX_ACC 16 /* of 32 registers */
#define FM_S8_WEIGHT_OFFSET 128
typedef int32x4_t fm_s8_acc;
typedef uint8x16_t fm_s8_x;
typedef uint8x16_t fm_s8_w;
FM_S8_INLINE fm_s8_x fm_s8_broadcast(uint32_t x4) { return vreinterpretq_u8_u32(vdupq_n_u32(x4)); }
FM_S8_INLINE fm_s8_w fm_s8_load_w(const int8_t *w) { return vld1q_u8((const uint8_t *)w); }
FM_S8_INLINE fm_s8_acc fm_s8_dot4(fm_s8_acc acc, fm_s8_x x, fm_s8_w w)
{
    return vreinterpretq_s32_u32(vdotq_u32(vreinterpretq_u32_s32(acc), x, w));
}
#else
#error "the int8 fast paths need AVX2, AVX-VNNI, AVX-512 VNNI, AArch64 i8mm or AArch64 dotprod"
#endif

#ifndef FM_S8_WEIGHT_OFFSET
#define FM_S8_WEIGHT_OFFSET 0 /* the weights are packed as they are */
#endif

/* The byte a kernel weight (or the 0 of the packing's padding) is packed as: w + FM_S8_WEIGHT_OFFSET modulo
 * 256, which for an offset of 0 or 128 is w's bit pattern XOR the offset. */
static inline int8_t fm_s8_pack_weight(int8_t w) { return (int8_t)((uint8_t)w ^ FM_S8_WEIGHT_OFFSET); }

/* The output channel (within a panel of FM_S8_LANES) whose 4 weights are packed at position p, so that
 * fm_s8_dot4's lane j is channel j. */
static inline size_t fm_s8_position_output(size_t p)
{
#if defined(__AVX2__) && !defined(__AVXVNNI__) && !defined(__AVX512VNNI__)
    static const unsigned char output[8] = {0, 1, 4, 5, 2, 3, 6, 7};
    return output[p];
#else
    return p;
#endif
}

/* Vectors wider than the ABI's registers never cross a call: every function using them is inlined. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int32_t fm_s8_i32v __attribute__((vector_size(FM_S8_LANES * 4)));
typedef uint8_t fm_s8_u8v __attribute__((vector_size(FM_S8_LANES)));
typedef float fm_s8_f32v __attribute__((vector_size(FM_S8_LANES * 4)));

/* requantize.h's high multiply, floor((acc * multiplier + 2^30) / 2^31), lane by lane. On x86 VPMULDQ makes
 * the exact 64-bit products of the even lanes, and of the odd lanes shifted down; the rounded quotients are
 * the low 32 bits of the even sums shifted right by 31 and the high 32 bits of the odd sums shifted left by
 * 1 (bits 31 to 62 of each sum either way). NEON's SQRDMULH is the same operation: (2 acc multiplier + 2^31)
 * / 2^32, saturated only at acc = multiplier = -2^31, and every multiplier is positive. */
FM_S8_INLINE fm_s8_i32v fm_s8_high_mul(fm_s8_i32v acc, fm_s8_i32v multiplier)
{
#if FM_S8_LANES == 16
    const __m512i a = (__m512i)acc, m = (__m512i)multiplier, half = _mm512_set1_epi64(1LL << 30);
    const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(a, m), half);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(m, 32)), half);
    return (fm_s8_i32v)_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 31), _mm512_slli_epi64(odd, 1));
#elif FM_S8_LANES == 8
    const __m256i a = (__m256i)acc, m = (__m256i)multiplier, half = _mm256_set1_epi64x(1LL << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, m), half);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(m, 32)), half);
    return (fm_s8_i32v)_mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
#else
    return (fm_s8_i32v)vqrdmulhq_s32((int32x4_t)acc, (int32x4_t)multiplier);
#endif
}
FM_DEFINE_REQUANTIZE(fm_s8_requantize_vector, fm_s8_i32v, fm_s8_high_mul)

typedef uint32_t fm_s8_u32v __attribute__((vector_size(FM_S8_LANES * 4)));

/* Bit j set when lane j of the FM_S8_LANES groups of 4 bytes at p is nonzero in some of the `count` rows
 * rows[r] + offset: a vector of groups tested at a time. */
FM_S8_INLINE unsigned fm_s8_nonzero_groups(const uint8_t *const *rows, size_t count, size_t offset)
{
    fm_s8_u32v bytes;
    memcpy(&bytes, rows[0] + offset, sizeof bytes);
    for (size_t r = 1; r < count; r++) {
        fm_s8_u32v more;
        memcpy(&more, rows[r] + offset, sizeof more);
        bytes |= more;
    }
#if FM_S8_LANES == 16
    return (unsigned)_mm512_test_epi32_mask((__m512i)bytes, (__m512i)bytes);
#elif FM_S8_LANES == 8
    return (unsigned)_mm256_movemask_ps((__m256)(bytes != 0));
#else
    return vaddvq_u32(vandq_u32((uint32x4_t)(bytes != 0), (uint32x4_t){1, 2, 4, 8}));
#endif
}

FM_S8_INLINE uint32_t fm_s8_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

FM_S8_INLINE fm_s8_acc fm_s8_load_i32(const int32_t *p)
{
    fm_s8_acc v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* With weights packed offset (FM_S8_WEIGHT_OFFSET != 0): for each of the `rows` rows, FM_S8_WEIGHT_OFFSET times
 * the sum of its bytes in the `count` listed groups of 4, at row[r] + step * list[i]: what its accumulators
 * start without (fm_s8_start). Nothing to do without an offset. */
FM_S8_INLINE void fm_s8_offset_corrections(uint32_t *correction, const uint8_t *const *row, size_t rows,
                                           const uint32_t *list, size_t count, size_t step)
{
#if FM_S8_WEIGHT_OFFSET
    const uint8x16_t ones = vdupq_n_u8(1);
    for (size_t r = 0; r < rows; r++) {
        uint32x4_t sum = vdupq_n_u32(0); /* each lane: the same sum of the broadcast groups */
        for (size_t i = 0; i < count; i++)
            sum = vdotq_u32(sum, fm_s8_broadcast(fm_s8_load_u32(row[r] + step * list[i])), ones);
        correction[r] = FM_S8_WEIGHT_OFFSET * vgetq_lane_u32(sum, 0);
    }
#else
    (void)correction, (void)row, (void)rows, (void)list, (void)count, (void)step;
#endif
}

/* The starting accumulator of a row: its channels' biases, less the row's correction where there is one. */
FM_S8_INLINE fm_s8_acc fm_s8_start(const int32_t *bias, const uint32_t *correction, size_t r)
{
    const fm_s8_acc acc = fm_s8_load_i32(bias);
#if FM_S8_WEIGHT_OFFSET
    return (fm_s8_acc)((fm_s8_u32v)acc - correction[r]);
#else
    (void)correction, (void)r;
    return acc;
#endif
}

/* Lane by lane, max(lo, min(hi, y)). */
FM_S8_INLINE fm_s8_i32v fm_s8_clamp(fm_s8_i32v y, int32_t lo, int32_t hi)
{
#if FM_S8_LANES == 16
    return (fm_s8_i32v)_mm512_max_epi32(_mm512_min_epi32((__m512i)y, _mm512_set1_epi32(hi)), _mm512_set1_epi32(lo));
#elif FM_S8_LANES == 8
    return (fm_s8_i32v)_mm256_max_epi32(_mm256_min_epi32((__m256i)y, _mm256_set1_epi32(hi)), _mm256_set1_epi32(lo));
#else
    return (fm_s8_i32v)vmaxq_s32(vminq_s32((int32x4_t)y, vdupq_n_s32(hi)), vdupq_n_s32(lo));
#endif
}

/* The accumulators of channels [c, c + count) (count <= FM_S8_LANES), requantized as requantize.h says and
 * written to element `index` of `out` onwards: the vector form of fm_requant_store. */
FM_S8_INLINE void fm_s8_store(void *out, size_t index, fm_s8_acc acc, size_t c, size_t count, const fm_requant *rq)
{
    const fm_s8_i32v sums = (fm_s8_i32v)acc;
    if (rq->dequantize) {
        fm_s8_f32v scale;
        memcpy(&scale, rq->dequantize + c, sizeof scale);
        const fm_s8_f32v logits = __builtin_convertvector(sums, fm_s8_f32v) * scale;
        if (count == FM_S8_LANES) /* a store of constant size: one instruction */
            memcpy((float *)out + index, &logits, sizeof logits);
        else
            memcpy((float *)out + index, &logits, count * sizeof(float));
        return;
    }
    fm_s8_i32v multiplier, shift, mask;
    memcpy(&multiplier, rq->multiplier + c, sizeof multiplier);
    memcpy(&shift, rq->shift + c, sizeof shift);
    memcpy(&mask, rq->mask + c, sizeof mask);
    const fm_s8_i32v y = fm_s8_clamp(rq->zero_point + fm_s8_requantize_vector(sums, multiplier, shift, mask),
                                      rq->lo, rq->hi);
    uint8_t *dst = (uint8_t *)out + index;
    if (rq->table) {
#if FM_S8_LANES == 16 && defined(__AVX512VBMI__)
        /* the 256-entry table as two byte permutes of 128 entries, chosen by each index's bit 7 */
        const __m512i at = _mm512_castsi128_si512(_mm512_cvtepi32_epi8((__m512i)y));
        const __m512i low = _mm512_permutex2var_epi8(_mm512_loadu_si512(rq->table), at,
                                                     _mm512_loadu_si512(rq->table + 64));
        const __m512i high = _mm512_permutex2var_epi8(_mm512_loadu_si512(rq->table + 128), at,
                                                      _mm512_loadu_si512(rq->table + 192));
        const __m128i looked = _mm512_castsi512_si128(_mm512_mask_blend_epi8(_mm512_movepi8_mask(at), low, high));
        if (count == FM_S8_LANES)
            memcpy(dst, &looked, sizeof looked);
        else
            memcpy(dst, &looked, count);
#else
        for (size_t j = 0; j < count; j++)
            dst[j] = rq->table[y[j]];
#endif
        return;
    }
    const fm_s8_u8v bytes = __builtin_convertvector(y, fm_s8_u8v);
    if (count == FM_S8_LANES)
        memcpy(dst, &bytes, sizeof bytes);
    else
        memcpy(dst, &bytes, count);
}

/* Runs CALL(R, P) with P = `panels` (1 to 8) as a constant, so that an always-inlined tile of R rows (or pixels)
 * by P panels is compiled, unrolled, for each; does nothing for another count. */
#define FM_S8_WITH_PANELS(R, panels, CALL)                                                            \
    switch (panels) {                                                                                 \
    case 1: CALL(R, 1); break;                                                                        \
    case 2: CALL(R, 2); break;                                                                        \
    case 3: CALL(R, 3); break;                                                                        \
    case 4: CALL(R, 4); break;                                                                        \
    case 5: CALL(R, 5); break;                                                                        \
    case 6: CALL(R, 6); break;                                                                        \
    case 7: CALL(R, 7); break;                                                                        \
    case 8: CALL(R, 8); break;                                                                        \
    default: break;                                                                                   \
    }

#endif
