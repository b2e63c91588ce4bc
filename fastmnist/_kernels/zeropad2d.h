/* Zero padding around an image, NHWC: (in_h, in_w, c) -> (out_h, out_w, c), the input at row pad_top and
 * column pad_left. */
#ifndef FM_ZEROPAD2D_H
#define FM_ZEROPAD2D_H

#include "common.h"

/* Output rows [row_begin, row_end) of one image. */
void fm_zeropad2d_f32(float *out, const float *in, const fm_window *w, size_t row_begin, size_t row_end);

#endif
