#include "batchnorm.h"

void fm_batchnorm_f32(float *x, const float *scale, const float *shift, size_t channels, size_t begin, size_t end)
{
    for (size_t p = begin; p < end; p++) {
        float *v = x + p * channels;
        for (size_t c = 0; c < channels; c++)
            v[c] = v[c] * scale[c] + shift[c];
    }
}
