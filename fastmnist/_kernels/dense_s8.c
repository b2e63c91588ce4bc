#include "dense_s8.h"

void fm_dense_s8(void *out, const uint8_t *in, const int8_t *kernel, const int32_t *bias, int32_t in_zero_point,
                 size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                 const fm_requant *rq)
{
    for (size_t row = 0; row < rows; row++) {
        const uint8_t *x = in + row * in_stride;
        for (size_t out_c = 0; out_c < out_dim; out_c++) {
            int32_t acc = bias[out_c];
            for (size_t in_c = 0; in_c < in_dim; in_c++)
                acc += ((int32_t)x[in_c] - in_zero_point) * kernel[in_c * out_dim + out_c];
            fm_requant_store(out, row * out_stride + out_c, acc, out_c, rq);
        }
    }
}
