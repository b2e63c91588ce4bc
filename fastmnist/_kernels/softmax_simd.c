/* Softmax fast path; see softmax.h. A model's last layer has few columns (10 for MNIST), which leaves little
 * for vectors to do within a row, and the library exp, called once per value, took 15% of the softmax
 * model's time at batch 1024. So the values are shifted by their row's max row by row, then exponentiated
 * as one flat array, a vector at a time whatever the rows' length, then normalised row by row. */
#include "softmax.h"
#include "simd.h"

/* x[i] = exp(x[i]) for i < count, every x[i] <= 0 (or NaN). Each value goes through the same vector code,
 * the last few padded, so a value's result does not depend on where it lies in the array. */
static void exp_nonpositive(float *x, size_t count)
{
    size_t i = 0;
    for (; i + FM_VECTOR_WIDTH <= count; i += FM_VECTOR_WIDTH)
        fm_store(x + i, fm_exp_nonpositive(fm_load(x + i)));
    if (i < count) {
        float part[FM_VECTOR_WIDTH] = {0};
        fm_memcpy(part, x + i, (count - i) * sizeof(float));
        fm_store(part, fm_exp_nonpositive(fm_load(part)));
        fm_memcpy(x + i, part, (count - i) * sizeof(float));
    }
}

void FM_FN(fm_softmax_f32)(float *x, size_t rows, size_t row_len)
{
    for (size_t row = 0; row < rows; row++) {
        float *v = x + row * row_len;
        float max = v[0];
        for (size_t i = 1; i < row_len; i++)
            max = v[i] > max ? v[i] : max;
        for (size_t i = 0; i < row_len; i++)
            v[i] -= max;
    }
    exp_nonpositive(x, rows * row_len);
    for (size_t row = 0; row < rows; row++) {
        float *v = x + row * row_len, sum = 0.0f;
        for (size_t i = 0; i < row_len; i++)
            sum += v[i];
        const float scale = 1.0f / sum;
        for (size_t i = 0; i < row_len; i++)
            v[i] *= scale;
    }
}
