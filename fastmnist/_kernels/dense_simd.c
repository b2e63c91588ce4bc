/* Dense fast path: register-blocked over rows (images) and a panel of FM_NR columns; see dense.h. */
#include "dense.h"
#include "simd.h"

#define MAX_ROWS 6 /* 6 rows x 2 vectors = 12 accumulators, within AVX2's 16 registers */

size_t FM_FN(fm_dense_panel_width)(void) { return FM_NR; }

size_t FM_FN(fm_dense_packed_size)(size_t in_dim, size_t out_dim)
{
    return (out_dim + FM_NR - 1) / FM_NR * FM_NR * in_dim;
}

void FM_FN(fm_dense_pack_f32)(float *packed, const float *kernel, size_t in_dim, size_t out_dim)
{
    const size_t panels = (out_dim + FM_NR - 1) / FM_NR;
    for (size_t panel = 0; panel < panels; panel++)
        for (size_t k = 0; k < in_dim; k++)
            for (size_t j = 0; j < FM_NR; j++) {
                const size_t col = panel * FM_NR + j;
                packed[(panel * in_dim + k) * FM_NR + j] = col < out_dim ? kernel[k * out_dim + col] : 0.0f;
            }
}

/* `rows` (<= MAX_ROWS, a constant after inlining) rows times one panel. */
FM_ALWAYS_INLINE void dense_block(size_t rows, float *out, const float *in, const float *panel, const float *bias,
                                  size_t in_dim, size_t out_dim, size_t col, fm_activation activation)
{
    fm_vec acc[MAX_ROWS][2];
    for (size_t r = 0; r < rows; r++) {
        acc[r][0] = fm_load(bias + col);
        acc[r][1] = fm_load(bias + col + FM_VECTOR_WIDTH);
    }
    for (size_t k = 0; k < in_dim; k++) {
        const fm_vec w0 = fm_load(panel + k * FM_NR);
        const fm_vec w1 = fm_load(panel + k * FM_NR + FM_VECTOR_WIDTH);
        for (size_t r = 0; r < rows; r++) {
            const fm_vec x = fm_broadcast(in[r * in_dim + k]);
            acc[r][0] += x * w0;
            acc[r][1] += x * w1;
        }
    }
    const size_t count = out_dim - col < FM_NR ? out_dim - col : FM_NR;
    for (size_t r = 0; r < rows; r++)
        fm_store_activated(out + r * out_dim + col, acc[r][0], acc[r][1], count, activation);
}

/* A single row would leave one dependent FMA chain per vector; four interleaved partial sums over k keep
 * the FMA units busy, which is what batch-1 latency needs. */
static void dense_single_row(float *out, const float *in, const float *panel, const float *bias,
                             size_t in_dim, size_t out_dim, size_t col, fm_activation activation)
{
    fm_vec acc[4][2] = {{{0}}};
    size_t k = 0;
    for (; k + 4 <= in_dim; k += 4)
        for (size_t u = 0; u < 4; u++) {
            const fm_vec x = fm_broadcast(in[k + u]);
            acc[u][0] += x * fm_load(panel + (k + u) * FM_NR);
            acc[u][1] += x * fm_load(panel + (k + u) * FM_NR + FM_VECTOR_WIDTH);
        }
    for (; k < in_dim; k++) {
        const fm_vec x = fm_broadcast(in[k]);
        acc[0][0] += x * fm_load(panel + k * FM_NR);
        acc[0][1] += x * fm_load(panel + k * FM_NR + FM_VECTOR_WIDTH);
    }
    const fm_vec lo = fm_load(bias + col) + ((acc[0][0] + acc[1][0]) + (acc[2][0] + acc[3][0]));
    const fm_vec hi = fm_load(bias + col + FM_VECTOR_WIDTH) + ((acc[0][1] + acc[1][1]) + (acc[2][1] + acc[3][1]));
    const size_t count = out_dim - col < FM_NR ? out_dim - col : FM_NR;
    fm_store_activated(out + col, lo, hi, count, activation);
}

void FM_FN(fm_dense_f32)(float *out, const float *in, const float *packed, const float *bias,
                         size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                         fm_activation activation)
{
    for (size_t col = col_begin; col < col_end; col += FM_NR) {
        const float *panel = packed + col * in_dim; /* col is a multiple of FM_NR */
        size_t row = 0;
        if (rows == 1) {
            dense_single_row(out, in, panel, bias, in_dim, out_dim, col, activation);
            continue;
        }
        for (; row + MAX_ROWS <= rows; row += MAX_ROWS)
            dense_block(MAX_ROWS, out + row * out_dim, in + row * in_dim, panel, bias, in_dim, out_dim, col, activation);
        const float *x = in + row * in_dim;
        float *y = out + row * out_dim;
        switch (rows - row) { /* the tail, each case specialised with a constant row count */
        case 5: dense_block(5, y, x, panel, bias, in_dim, out_dim, col, activation); break;
        case 4: dense_block(4, y, x, panel, bias, in_dim, out_dim, col, activation); break;
        case 3: dense_block(3, y, x, panel, bias, in_dim, out_dim, col, activation); break;
        case 2: dense_block(2, y, x, panel, bias, in_dim, out_dim, col, activation); break;
        case 1: dense_block(1, y, x, panel, bias, in_dim, out_dim, col, activation); break;
        default: break;
        }
    }
}
