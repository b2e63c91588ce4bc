/* 2-D max pooling, NHWC, one image. */
#ifndef FM_MAXPOOL2D_H
#define FM_MAXPOOL2D_H

#include "common.h"

/* Output rows [row_begin, row_end) of one image. Window positions outside the input (TensorFlow "same"
 * padding) are skipped, so an overhanging window takes the max of the values inside it. The channel loop
 * is innermost and contiguous, which compilers vectorise; there is no separate SIMD path. */
void fm_maxpool2d_f32(float *out, const float *in, const fm_window *w, size_t row_begin, size_t row_end);

#endif
