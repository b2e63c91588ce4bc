/* Element-wise activations (softmax, which needs a whole row, is in softmax.h). */
#ifndef FM_ACTIVATION_H
#define FM_ACTIVATION_H

#include "common.h"

/* The scalar path, the definition: x[i] = activation(x[i]) for i < count, every kind but softmax (which it
 * leaves alone). Written for clarity with the C library's functions; gelu goes through double, where
 * erfc and the cube of the tanh form lose nothing that float would. */
void fm_activation_f32(float *x, size_t count, fm_activation activation);

/* Fast paths: the same with the vector approximations of simd.h (their accuracy is stated there); every
 * value goes through the same vector code, the last few padded, so a value's result does not depend on
 * where it lies in the array. */
#define FM_DECLARE_ACTIVATION_FAST(isa) void fm_activation_f32__##isa(float *x, size_t count, fm_activation activation);

FM_DECLARE_ACTIVATION_FAST(avx2)
FM_DECLARE_ACTIVATION_FAST(avx512)
FM_DECLARE_ACTIVATION_FAST(neon)

#endif
