#include "dense.h"

#include "activation.h"

void fm_dense_f32(float *out, const float *in, const float *kernel, const float *bias,
                  size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                  fm_activation activation)
{
    for (size_t row = 0; row < rows; row++) {
        const float *x = in + row * in_dim;
        float *y = out + row * out_dim;
        for (size_t out_c = col_begin; out_c < col_end; out_c++)
            y[out_c] = bias[out_c];
        /* Input by input, so that a zero input (most MNIST pixels and ReLU outputs) is skipped: its terms
         * x * w are zero and leave every sum as it was, and each sum still adds its terms in input order. */
        for (size_t in_c = 0; in_c < in_dim; in_c++) {
            if (x[in_c] == 0.0f)
                continue;
            const float *k = kernel + in_c * out_dim;
            for (size_t out_c = col_begin; out_c < col_end; out_c++)
                y[out_c] += x[in_c] * k[out_c];
        }
        if (activation.kind != FM_ACT_SOFTMAX)
            fm_activation_f32(y + col_begin, col_end - col_begin, activation);
    }
}

size_t fm_dense_packed_size_for_width(size_t in_dim, size_t out_dim, size_t panel_width)
{
    return fm_dense_padded_columns(out_dim, panel_width) * in_dim;
}

void fm_dense_pack_f32_for_width(float *packed, const float *kernel, size_t in_dim, size_t out_dim,
                                 size_t panel_width)
{
    for (size_t col = 0; col < fm_dense_padded_columns(out_dim, panel_width); col += panel_width) {
        size_t stride;
        float *panel = packed + fm_dense_panel_offset(in_dim, out_dim, col, panel_width, &stride);
        for (size_t k = 0; k < in_dim; k++)
            for (size_t j = 0; j < panel_width; j++)
                panel[k * stride + j] = col + j < out_dim ? kernel[k * out_dim + col + j] : 0.0f;
    }
}
