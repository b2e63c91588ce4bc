#include "dense_s8.h"

void fm_dense_s8(void *out, const uint8_t *in, const int8_t *kernel, const int32_t *bias, int32_t in_zero_point,
                 size_t rows, size_t in_dim, size_t in_stride, size_t out_dim, size_t out_stride,
                 const fm_requant *rq)
{
    for (size_t row = 0; row < rows; row++) {
        const uint8_t *x = in + row * in_stride;
        for (size_t first = 0; first < out_dim; first += FM_S8_SCALAR_BLOCK) {
            /* output channels [first, last), so that each input reads a contiguous run of its kernel row */
            const size_t count = out_dim - first < FM_S8_SCALAR_BLOCK ? out_dim - first : FM_S8_SCALAR_BLOCK;
            int32_t acc[FM_S8_SCALAR_BLOCK];
            for (size_t out_c = 0; out_c < count; out_c++)
                acc[out_c] = bias[first + out_c];
            for (size_t in_c = 0; in_c < in_dim; in_c++) {
                const int32_t value = (int32_t)x[in_c] - in_zero_point;
                if (value == 0)
                    continue; /* the input is the real value 0: its terms are exactly zero */
                const int8_t *k = kernel + in_c * out_dim + first;
                if (count == FM_S8_SCALAR_BLOCK)
                    fm_s8_multiply_add(acc, k, value, FM_S8_SCALAR_BLOCK);
                else
                    fm_s8_multiply_add(acc, k, value, count);
            }
            for (size_t out_c = 0; out_c < count; out_c++)
                fm_requant_store(out, row * out_stride + first + out_c, acc[out_c], first + out_c, rq);
        }
    }
}
