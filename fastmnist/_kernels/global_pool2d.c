#include "global_pool2d.h"

void fm_global_avgpool2d_f32(float *out, const float *in, size_t positions, size_t channels, size_t c_begin,
                             size_t c_end)
{
    for (size_t c = c_begin; c < c_end; c++)
        out[c] = 0.0f;
    for (size_t p = 0; p < positions; p++) {
        const float *v = in + p * channels;
        for (size_t c = c_begin; c < c_end; c++)
            out[c] += v[c];
    }
    for (size_t c = c_begin; c < c_end; c++)
        out[c] /= (float)positions;
}

void fm_global_maxpool2d_f32(float *out, const float *in, size_t positions, size_t channels, size_t c_begin,
                             size_t c_end)
{
    for (size_t c = c_begin; c < c_end; c++)
        out[c] = in[c];
    for (size_t p = 1; p < positions; p++) {
        const float *v = in + p * channels;
        for (size_t c = c_begin; c < c_end; c++)
            out[c] = v[c] > out[c] ? v[c] : out[c];
    }
}
