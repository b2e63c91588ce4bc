#include "activation.h"

#include <math.h>

void fm_activation_f32(float *x, size_t count, fm_activation activation)
{
    if (activation == FM_ACTIVATION_RELU) {
        for (size_t i = 0; i < count; i++)
            x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    } else if (activation == FM_ACTIVATION_ELU) {
        for (size_t i = 0; i < count; i++)
            x[i] = x[i] > 0.0f ? x[i] : expm1f(x[i]); /* expm1 keeps precision near 0 */
    }
}

void fm_softmax_f32(float *x, size_t rows, size_t row_len)
{
    for (size_t row = 0; row < rows; row++) {
        float *v = x + row * row_len;
        float max = v[0];
        for (size_t i = 1; i < row_len; i++)
            max = v[i] > max ? v[i] : max;
        float sum = 0.0f;
        for (size_t i = 0; i < row_len; i++) {
            v[i] = expf(v[i] - max);
            sum += v[i];
        }
        const float scale = 1.0f / sum;
        for (size_t i = 0; i < row_len; i++)
            v[i] *= scale;
    }
}
