/* Element-wise activations (softmax, which needs a whole row, is in softmax.h). */
#ifndef FM_ACTIVATION_H
#define FM_ACTIVATION_H

#include "common.h"

/* x[i] = activation(x[i]) for i < count; relu, elu or linear. */
void fm_activation_f32(float *x, size_t count, fm_activation activation);

#endif
