/* The vector type of a fast-path translation unit. Each *_simd.c file is compiled once per ISA, with that
 * ISA's compiler flags and FM_ISA_SUFFIX / FM_VECTOR_WIDTH defined by the build (setup.py); GCC and Clang
 * vector extensions then become that ISA's instructions. */
#ifndef FM_SIMD_H
#define FM_SIMD_H

#include <string.h>

#if !defined(FM_ISA_SUFFIX) || !defined(FM_VECTOR_WIDTH)
#error "compile fast paths with FM_ISA_SUFFIX and FM_VECTOR_WIDTH defined (see setup.py)"
#endif

#define FM_CONCAT_(a, b) a##__##b
#define FM_CONCAT(a, b) FM_CONCAT_(a, b)
#define FM_FN(name) FM_CONCAT(name, FM_ISA_SUFFIX) /* fm_dense_f32 -> fm_dense_f32__avx2 */

#define FM_ALWAYS_INLINE static inline __attribute__((always_inline))

typedef float fm_vec __attribute__((vector_size(FM_VECTOR_WIDTH * 4)));
typedef int fm_ivec __attribute__((vector_size(FM_VECTOR_WIDTH * 4)));

/* Two vectors of output channels per register tile: enough independent accumulators to hide FMA latency. */
#define FM_NR (2 * FM_VECTOR_WIDTH)

FM_ALWAYS_INLINE fm_vec fm_load(const float *p)
{
    fm_vec v;
    memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

FM_ALWAYS_INLINE void fm_store(float *p, fm_vec v) { memcpy(p, &v, sizeof v); }

/* x - 0 is exact for every x (unlike x + 0, which turns -0 into +0), so compilers fold it to a plain splat */
FM_ALWAYS_INLINE fm_vec fm_broadcast(float x) { return x - (fm_vec){0}; }

FM_ALWAYS_INLINE fm_vec fm_relu(fm_vec v) { return (fm_vec)((fm_ivec)v & (v > (fm_vec){0})); }

#endif
