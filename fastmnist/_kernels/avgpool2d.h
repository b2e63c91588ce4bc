/* 2-D average pooling, NHWC, one image. */
#ifndef FM_AVGPOOL2D_H
#define FM_AVGPOOL2D_H

#include "common.h"

/* Output rows [row_begin, row_end) of one image: each window's sum of the values inside the input, divided
 * by their count, or by k_h * k_w when count_include_pad (the padding counting as zeros). Every window holds
 * at least one input value (fastmnist.layers refuses pads as large as the window). As in maxpool2d, the
 * channel loop is innermost and contiguous, for the compiler to vectorise. */
void fm_avgpool2d_f32(float *out, const float *in, const fm_window *w, int count_include_pad, size_t row_begin,
                      size_t row_end);

#endif
