/* Element-wise activations and softmax. */
#ifndef FM_ACTIVATION_H
#define FM_ACTIVATION_H

#include "common.h"

/* x[i] = activation(x[i]) for i < count; relu, elu or linear (softmax is fm_softmax_f32). */
void fm_activation_f32(float *x, size_t count, fm_activation activation);

/* Softmax of each of `rows` rows of `row_len` values, in place; subtracts the row max first. */
void fm_softmax_f32(float *x, size_t rows, size_t row_len);

#endif
