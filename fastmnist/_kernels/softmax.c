#include "softmax.h"

#include <math.h>

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
