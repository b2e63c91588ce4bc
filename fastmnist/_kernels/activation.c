#include "activation.h"

#include <math.h>

#define SELU_SCALE 1.0507009873554805f
#define SELU_ALPHA 1.6732632423543772f

static float sigmoid(float x)
{
    /* exp of a non-positive value only, so that nothing overflows */
    return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

static float activate(float x, fm_activation a)
{
    switch (a.kind) {
    case FM_ACT_RELU:
        if (x >= a.gamma)
            return a.gamma;
        if (x >= a.beta)
            return x;
        return a.alpha == 0.0f ? 0.0f : a.alpha * (x - a.beta);
    case FM_ACT_ELU:
        return x > 0.0f ? x : a.alpha * expm1f(x); /* expm1 keeps precision near 0 */
    case FM_ACT_SELU:
        return SELU_SCALE * (x > 0.0f ? x : SELU_ALPHA * expm1f(x));
    case FM_ACT_TANH:
        return tanhf(x);
    case FM_ACT_SIGMOID:
        return sigmoid(x);
    case FM_ACT_HARD_SIGMOID: {
        const float y = a.alpha * x + a.beta;
        return y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y;
    }
    case FM_ACT_SILU:
        return x * sigmoid(x);
    case FM_ACT_GELU: /* 0.5 (1 + erf(t)) = 0.5 erfc(-t), which keeps its precision for negative x */
        return (float)(0.5 * (double)x * erfc(-(double)x * 0.70710678118654752440));
    case FM_ACT_GELU_TANH: { /* 0.5 (1 + tanh(y)) = sigmoid(2 y), which does not cancel for negative x */
        const double d = x, y = 0.79788456080286535588 * (d + 0.044715 * d * d * d);
        return (float)(y >= 0.0 ? d / (1.0 + exp(-2.0 * y)) : d * exp(2.0 * y) / (1.0 + exp(2.0 * y)));
    }
    case FM_ACT_SOFTPLUS: /* max(x, 0) + log(1 + exp(-|x|)): no overflow, no cancellation */
        return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
    case FM_ACT_LINEAR:
    case FM_ACT_SOFTMAX:
        break;
    }
    return x;
}

void fm_activation_f32(float *x, size_t count, fm_activation activation)
{
    if (activation.kind == FM_ACT_LINEAR || activation.kind == FM_ACT_SOFTMAX)
        return;
    for (size_t i = 0; i < count; i++)
        x[i] = activate(x[i], activation);
}
