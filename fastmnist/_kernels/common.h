/* Types shared by every kernel. Activations are NHWC float32; sizes are counts of floats. */
#ifndef FM_COMMON_H
#define FM_COMMON_H

#include <stddef.h>

typedef enum {
    FM_ACTIVATION_LINEAR = 0,
    FM_ACTIVATION_RELU = 1,
    FM_ACTIVATION_ELU = 2,
    FM_ACTIVATION_SOFTMAX = 3, /* over the last axis; applied by the caller once all columns exist */
} fm_activation;

/* The geometry of a sliding-window op (conv2d, maxpool2d) on one image. */
typedef struct {
    size_t in_h, in_w, in_c;
    size_t out_h, out_w, out_c;
    size_t k_h, k_w;
    size_t stride_y, stride_x;
    size_t pad_top, pad_left; /* TensorFlow's "same" puts the odd padding at the bottom/right */
} fm_window;

#endif
