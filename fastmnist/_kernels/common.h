/* Types shared by every kernel. Activations are NHWC float32; sizes are counts of floats. */
#ifndef FM_COMMON_H
#define FM_COMMON_H

#include <stddef.h>

typedef enum {
    FM_ACT_LINEAR = 0,
    FM_ACT_RELU = 1,         /* gamma if x >= gamma, x if x >= beta, else alpha (x - beta) */
    FM_ACT_ELU = 2,          /* x if x > 0, else alpha expm1(x) */
    FM_ACT_SELU = 3,
    FM_ACT_TANH = 4,
    FM_ACT_SIGMOID = 5,
    FM_ACT_HARD_SIGMOID = 6, /* max(0, min(1, alpha x + beta)) */
    FM_ACT_SILU = 7,         /* x sigmoid(x) */
    FM_ACT_GELU = 8,         /* 0.5 x (1 + erf(x / sqrt 2)) */
    FM_ACT_GELU_TANH = 9,    /* 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
    FM_ACT_SOFTPLUS = 10,    /* log(1 + exp(x)) */
    FM_ACT_SOFTMAX = 11,     /* over the last axis; applied by the caller once all columns exist */
} fm_activation_kind;

/* An activation and its parameters (docs/FORMAT.md), passed by value. relu: alpha = negative_slope,
 * beta = threshold, gamma = max_value (INFINITY for none); elu: alpha; hard_sigmoid: alpha, beta; the
 * parameters of the other kinds are unused. */
typedef struct {
    fm_activation_kind kind;
    float alpha, beta, gamma;
} fm_activation;

static inline fm_activation fm_activation_linear(void)
{
    const fm_activation linear = {FM_ACT_LINEAR, 0.0f, 0.0f, 0.0f};
    return linear;
}

/* relu without parameters (max(x, 0)), which the fast paths compute with a single mask */
static inline int fm_is_plain_relu(fm_activation a)
{
    return a.kind == FM_ACT_RELU && a.alpha == 0.0f && a.beta == 0.0f && a.gamma > 3.4e38f;
}

/* The geometry of a sliding-window op (conv2d, depthwise_conv2d, maxpool2d, avgpool2d, zeropad2d) on one
 * image. The pads after the input (bottom, right) follow from the output size. */
typedef struct {
    size_t in_h, in_w, in_c;
    size_t out_h, out_w, out_c;
    size_t k_h, k_w;
    size_t stride_y, stride_x;
    size_t pad_top, pad_left; /* TensorFlow's "same" puts the odd padding at the bottom/right; or explicit */
} fm_window;

#endif
