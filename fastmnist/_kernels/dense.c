#include "dense.h"

#include "activation.h"

void fm_dense_f32(float *out, const float *in, const float *kernel, const float *bias,
                  size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                  fm_activation activation)
{
    for (size_t row = 0; row < rows; row++) {
        const float *x = in + row * in_dim;
        float *y = out + row * out_dim;
        for (size_t out_c = col_begin; out_c < col_end; out_c++) {
            float acc = bias[out_c];
            for (size_t in_c = 0; in_c < in_dim; in_c++)
                acc += x[in_c] * kernel[in_c * out_dim + out_c];
            y[out_c] = acc;
        }
        if (activation.kind != FM_ACT_SOFTMAX)
            fm_activation_f32(y + col_begin, col_end - col_begin, activation);
    }
}
