/* Global pooling, NHWC, one image: (positions, channels) -> (channels,), positions = h * w. */
#ifndef FM_GLOBAL_POOL2D_H
#define FM_GLOBAL_POOL2D_H

#include <stddef.h>

/* Channels [c_begin, c_end): out[c] = the mean (sum in position order, then one division) or the max of
 * in[p][c] over every position p. The channel loop is innermost and contiguous, for the compiler to
 * vectorise; a channel's result does not depend on the range it is computed in. */
void fm_global_avgpool2d_f32(float *out, const float *in, size_t positions, size_t channels, size_t c_begin,
                             size_t c_end);
void fm_global_maxpool2d_f32(float *out, const float *in, size_t positions, size_t channels, size_t c_begin,
                             size_t c_end);

#endif
