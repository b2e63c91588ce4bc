/* Softmax over the last axis: each row of values becomes probabilities that sum to 1. */
#ifndef FM_SOFTMAX_H
#define FM_SOFTMAX_H

#include "common.h"

/* Scalar path: softmax of each of `rows` rows of `row_len` values, in place; subtracts the row max first. */
void fm_softmax_f32(float *x, size_t rows, size_t row_len);

/* Fast paths: the same, with a vector exp (see softmax_simd.c). */
#define FM_DECLARE_SOFTMAX_FAST(isa) void fm_softmax_f32__##isa(float *x, size_t rows, size_t row_len);

FM_DECLARE_SOFTMAX_FAST(avx2)
FM_DECLARE_SOFTMAX_FAST(avx512)
FM_DECLARE_SOFTMAX_FAST(neon)

#endif
