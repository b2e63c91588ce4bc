/* The engine's NEON fast paths against its scalar path, built from the same kernel sources for AArch64 and
 * run under qemu-aarch64 (tests/test_export_c.py): dense, conv2d and softmax on odd shapes and at the edges
 * of the fast paths' tiles (panels of 8 columns, groups of 6 panels, blocks of 6 rows, chunks of inputs,
 * patches of 3 x 2 pixels), with zero and -0 inputs for the zero skipping; and every activation of the
 * element-wise fast path.
 *
 * Bounds, as in tests/test_kernels.py: a sum of K float32 terms is within gamma_K * sum |terms| of exact,
 * gamma_K = K u / (1 - K u), u = 2^-24, so two paths differ by at most twice that, plus a few ulps of the
 * result for ELU's expm1; softmax by twice (spread + 8 + row_len) u relative, spread being max - x; an
 * activation by twice the bound simd.h states for its vector form (the C library's is within it too).
 * Prints each failure; exits with 1 if there was one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "conv2d.h"
#include "dense.h"
#include "softmax.h"

#define U (1.0 / 16777216.0)
#define PANEL 8 /* the NEON panel width: two vectors of 4 */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static int failures, cases;

static double uniform(void) /* in [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Values in [-1, 1], a share of them exactly zero (a few -0), as after a ReLU or in an MNIST image. */
static void fill(float *x, size_t count, double zeros)
{
    for (size_t i = 0; i < count; i++) {
        const double r = uniform();
        x[i] = r < zeros ? (r < zeros / 8 ? -0.0f : 0.0f) : (float)(2.0 * uniform() - 1.0);
    }
}

static double gamma_k(size_t k) { return (double)k * U / (1.0 - (double)k * U); }

static void check(const char *what, const float *fast, const float *scalar, const double *bound, size_t count)
{
    cases++;
    for (size_t i = 0; i < count; i++) {
        const double error = fabs((double)fast[i] - (double)scalar[i]);
        if (!(error <= bound[i])) {
            printf("FAIL %s: value %zu is %.9g on neon, %.9g on scalar (bound %.3g)\n", what, i, fast[i],
                   scalar[i], bound[i]);
            failures++;
            return;
        }
    }
}

/* the activations fused into dense and conv2d here: linear, plain relu, elu, and relu with every parameter */
static const fm_activation ACTIVATIONS[] = {
    {FM_ACT_LINEAR, 0.0f, 0.0f, 0.0f}, {FM_ACT_RELU, 0.0f, 0.0f, INFINITY}, {FM_ACT_ELU, 1.0f, 0.0f, 0.0f},
    {FM_ACT_RELU, 0.25f, 0.125f, 0.5f}};
static const char *const ACTIVATION_NAMES[] = {"linear", "relu", "elu", "relu(0.25, 0.125, 0.5)"};
#define FUSED (sizeof ACTIVATIONS / sizeof ACTIVATIONS[0])

static double activation_slack(float y, fm_activation activation)
{
    return 4 * U * fabs(y) + (activation.kind == FM_ACT_ELU ? 1e-7 : 0.0);
}

static void test_dense(size_t rows, size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end,
                       int activation_index)
{
    const fm_activation activation = ACTIVATIONS[activation_index];
    const size_t padded = (out_dim + 63) / 64 * 64;
    float *in = malloc(rows * in_dim * sizeof(float)), *kernel = malloc(in_dim * out_dim * sizeof(float));
    float *bias = calloc(padded, sizeof(float));
    float *packed = malloc(fm_dense_packed_size__neon(in_dim, out_dim) * sizeof(float));
    float *fast = calloc(rows * out_dim, sizeof(float)), *scalar = calloc(rows * out_dim, sizeof(float));
    double *bound = calloc(rows * out_dim, sizeof(double));
    uint32_t *active = malloc(fm_dense_active_size(rows, in_dim) * sizeof(uint32_t));
    fill(in, rows * in_dim, 0.5);
    fill(kernel, in_dim * out_dim, 0.0);
    fill(bias, out_dim, 0.0);
    fm_dense_pack_f32__neon(packed, kernel, in_dim, out_dim);
    fm_dense_f32__neon(fast, in, packed, bias, rows, in_dim, out_dim, col_begin, col_end, activation, active);
    fm_dense_f32(scalar, in, kernel, bias, rows, in_dim, out_dim, col_begin, col_end, activation);
    for (size_t r = 0; r < rows; r++)
        for (size_t o = col_begin; o < col_end; o++) {
            double magnitude = fabs(bias[o]);
            for (size_t k = 0; k < in_dim; k++)
                magnitude += fabs((double)in[r * in_dim + k] * kernel[k * out_dim + o]);
            bound[r * out_dim + o] = 2 * gamma_k(in_dim + 1) * magnitude +
                                     activation_slack(scalar[r * out_dim + o], activation);
        }
    char what[128];
    snprintf(what, sizeof what, "dense rows %zu, %zu -> %zu, columns [%zu, %zu), %s", rows, in_dim, out_dim,
             col_begin, col_end, ACTIVATION_NAMES[activation_index]);
    check(what, fast, scalar, bound, rows * out_dim);
    free(in), free(kernel), free(bias), free(packed), free(fast), free(scalar), free(bound), free(active);
}

/* TensorFlow's output size and padding before, along one axis. */
static size_t axis(size_t in, size_t k, size_t stride, int same, size_t *pad_before)
{
    if (same) {
        const size_t out = (in + stride - 1) / stride;
        const size_t total = (out - 1) * stride + k > in ? (out - 1) * stride + k - in : 0;
        *pad_before = total / 2;
        return out;
    }
    *pad_before = 0;
    return (in - k) / stride + 1;
}

static void test_conv2d(size_t in_h, size_t in_w, size_t in_c, size_t out_c, size_t k_h, size_t k_w,
                        size_t stride_y, size_t stride_x, int same, int activation_index)
{
    if (!same && (k_h > in_h || k_w > in_w))
        return;
    const fm_activation activation = ACTIVATIONS[activation_index];
    fm_window w = {in_h, in_w, in_c, 0, 0, out_c, k_h, k_w, stride_y, stride_x, 0, 0};
    w.out_h = axis(in_h, k_h, stride_y, same, &w.pad_top);
    w.out_w = axis(in_w, k_w, stride_x, same, &w.pad_left);
    const size_t taps = k_h * k_w * in_c, outputs = w.out_h * w.out_w * out_c;
    float *in = malloc(in_h * in_w * in_c * sizeof(float)), *kernel = malloc(taps * out_c * sizeof(float));
    float *bias = calloc((out_c + 63) / 64 * 64, sizeof(float));
    float *packed = malloc(fm_conv2d_packed_size__neon(&w) * sizeof(float));
    float *padded = malloc(fm_conv2d_padded_h(&w) * fm_conv2d_padded_w(&w) * in_c * sizeof(float));
    float *fast = calloc(outputs, sizeof(float)), *scalar = calloc(outputs, sizeof(float));
    double *bound = calloc(outputs, sizeof(double));
    uint32_t *active = malloc(fm_conv2d_active_size(&w) * sizeof(uint32_t));
    fill(in, in_h * in_w * in_c, 0.5);
    fill(kernel, taps * out_c, 0.0);
    fill(bias, out_c, 0.0);
    fm_conv2d_pack_f32__neon(packed, kernel, &w);
    fm_conv2d_pad_f32(padded, in, &w, 0, fm_conv2d_padded_h(&w));
    fm_conv2d_f32__neon(fast, padded, packed, bias, &w, 0, w.out_h, activation, active);
    fm_conv2d_f32(scalar, in, kernel, bias, &w, 0, w.out_h * w.out_w, activation);
    for (size_t y = 0; y < w.out_h; y++)
        for (size_t x = 0; x < w.out_w; x++)
            for (size_t o = 0; o < out_c; o++) {
                double magnitude = fabs(bias[o]);
                for (size_t ky = 0; ky < k_h; ky++)
                    for (size_t kx = 0; kx < k_w; kx++) {
                        const long iy = (long)(y * stride_y + ky) - (long)w.pad_top;
                        const long ix = (long)(x * stride_x + kx) - (long)w.pad_left;
                        if (iy < 0 || ix < 0 || iy >= (long)in_h || ix >= (long)in_w)
                            continue;
                        for (size_t c = 0; c < in_c; c++)
                            magnitude += fabs((double)in[((size_t)iy * in_w + (size_t)ix) * in_c + c] *
                                              kernel[((ky * k_w + kx) * in_c + c) * out_c + o]);
                    }
                const size_t i = (y * w.out_w + x) * out_c + o;
                bound[i] = 2 * gamma_k(taps + 1) * magnitude + activation_slack(scalar[i], activation);
            }
    char what[160];
    snprintf(what, sizeof what, "conv2d %zux%zux%zu -> %zu, kernel %zux%zu, strides %zux%zu, %s, %s", in_h, in_w,
             in_c, out_c, k_h, k_w, stride_y, stride_x, same ? "same" : "valid", ACTIVATION_NAMES[activation_index]);
    check(what, fast, scalar, bound, outputs);
    free(in), free(kernel), free(bias), free(packed), free(padded), free(fast), free(scalar), free(bound);
    free(active);
}

static void test_softmax(size_t rows, size_t row_len, float spread)
{
    const size_t count = rows * row_len;
    float *fast = malloc(count * sizeof(float)), *scalar = malloc(count * sizeof(float));
    double *bound = malloc(count * sizeof(double));
    fill(fast, count, 0.0);
    for (size_t i = 0; i < count; i++)
        fast[i] *= spread;
    memcpy(scalar, fast, count * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        float max = fast[r * row_len];
        for (size_t i = 1; i < row_len; i++)
            max = fast[r * row_len + i] > max ? fast[r * row_len + i] : max;
        for (size_t i = 0; i < row_len; i++) /* for now the logits' distance below the max */
            bound[r * row_len + i] = (double)max - fast[r * row_len + i];
    }
    fm_softmax_f32__neon(fast, rows, row_len);
    fm_softmax_f32(scalar, rows, row_len);
    for (size_t i = 0; i < count; i++)
        bound[i] = 2 * scalar[i] * (bound[i] + 8 + (double)row_len) * U + 1e-37;
    char what[96];
    snprintf(what, sizeof what, "softmax %zu rows of %zu, logits within +-%g", rows, row_len, spread);
    check(what, fast, scalar, bound, count);
    free(fast), free(scalar), free(bound);
}

/* One activation on -100 .. 100 (past exp's underflow at -87), finely around 0 and +-2, each value's bound
 * `relative` u of the result plus `absolute` (simd.h's figures), doubled; gelu's tanh form and hard_sigmoid
 * have their own (tests/test_kernels.py). */
static void test_activation(const char *name, fm_activation activation, double relative, double absolute)
{
    enum { COUNT = 4099 }; /* not a multiple of the vector width: a padded tail */
    static float fast[COUNT], scalar[COUNT];
    static double bound[COUNT];
    for (int i = 0; i < COUNT; i++) {
        const double t = (double)i / (COUNT - 1);
        fast[i] = (float)(i % 3 == 0 ? 200.0 * t - 100.0 : i % 3 == 1 ? 4.0 * t - 2.0 : 2e-3 * t - 1e-3);
    }
    memcpy(scalar, fast, sizeof fast);
    float x[COUNT];
    memcpy(x, fast, sizeof fast);
    fm_activation_f32__neon(fast, COUNT, activation);
    fm_activation_f32(scalar, COUNT, activation);
    for (int i = 0; i < COUNT; i++) {
        double r = relative;
        if (activation.kind == FM_ACT_GELU_TANH)
            r = 11 + 4 * fabs(2 * sqrt(2 / 3.141592653589793) * (x[i] + 0.044715 * pow(x[i], 3)));
        bound[i] = activation.kind == FM_ACT_HARD_SIGMOID
                       ? 2 * 2 * U * (fabs(activation.alpha * x[i]) + fabs(activation.beta))
                       : 2 * (r * U * fabs(scalar[i]) + absolute);
    }
    char what[64];
    snprintf(what, sizeof what, "activation %s", name);
    check(what, fast, scalar, bound, COUNT);
}

int main(void)
{
    test_activation("relu", ACTIVATIONS[1], 0, 0.0);
    test_activation("relu with slope, threshold and cap", (fm_activation){FM_ACT_RELU, 0.25f, 0.5f, 4.0f}, 2, 0.0);
    test_activation("elu 0.75", (fm_activation){FM_ACT_ELU, 0.75f, 0.0f, 0.0f}, 6, 0.0);
    test_activation("selu", (fm_activation){FM_ACT_SELU, 0.0f, 0.0f, 0.0f}, 7, 0.0);
    test_activation("tanh", (fm_activation){FM_ACT_TANH, 0.0f, 0.0f, 0.0f}, 10, 0.0);
    test_activation("sigmoid", (fm_activation){FM_ACT_SIGMOID, 0.0f, 0.0f, 0.0f}, 9, 1e-37);
    test_activation("hard_sigmoid", (fm_activation){FM_ACT_HARD_SIGMOID, 0.2f, 0.5f, 0.0f}, 0, 0.0);
    test_activation("silu", (fm_activation){FM_ACT_SILU, 0.0f, 0.0f, 0.0f}, 10, 2e-36);
    test_activation("gelu", (fm_activation){FM_ACT_GELU, 0.0f, 0.0f, 0.0f}, 24, 1e-36);
    test_activation("gelu tanh", (fm_activation){FM_ACT_GELU_TANH, 0.0f, 0.0f, 0.0f}, 0, 1e-37);
    test_activation("softplus", (fm_activation){FM_ACT_SOFTPLUS, 0.0f, 0.0f, 0.0f}, 12, 1e-37);

    /* rows: one (the single-row path), a block of 6 and a tail; columns: a panel, a group of 6 panels and
     * their edges; inputs: less than a vector, a tail, and enough for two chunks at 13 rows */
    static const size_t rows[] = {1, 2, 6, 7, 13};
    static const size_t in_dims[] = {1, 3, 4, 9, 64, 301};
    static const size_t out_dims[] = {1, 7, 8, 9, 17, 47, 48, 49, 97};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        for (size_t k = 0; k < sizeof in_dims / sizeof in_dims[0]; k++)
            for (size_t o = 0; o < sizeof out_dims / sizeof out_dims[0]; o++)
                test_dense(rows[r], in_dims[k], out_dims[o], 0, out_dims[o], (int)((r + k + o) % FUSED));
    test_dense(13, 6000, 17, 0, 17, 1);      /* 13 rows: 5041 inputs a chunk, so two chunks */
    test_dense(1, 300, 100, PANEL, 56, 2);   /* a range of whole panels inside the columns */
    test_dense(7, 300, 100, 6 * PANEL, 100, 1); /* from the second group to the ragged end */

    static const size_t shapes[][3] = {{7, 9, 1}, {8, 8, 3}, {6, 5, 9}, {11, 13, 2}, {5, 7, 17}};
    static const size_t kernels[][2] = {{1, 1}, {3, 3}, {3, 5}, {5, 5}, {2, 1}};
    static const size_t strides[][2] = {{1, 1}, {2, 1}, {2, 2}};
    static const size_t filters[] = {1, 7, 8, 9, 17, 33};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++)
            for (size_t t = 0; t < sizeof strides / sizeof strides[0]; t++)
                for (int same = 0; same < 2; same++) {
                    const size_t f = filters[(s + k + t + (size_t)same) % (sizeof filters / sizeof filters[0])];
                    test_conv2d(shapes[s][0], shapes[s][1], shapes[s][2], f, kernels[k][0], kernels[k][1],
                                strides[t][0], strides[t][1], same, (int)((s + k + t) % FUSED));
                }

    static const size_t row_lens[] = {1, 3, 4, 5, 7, 9, 10, 33};
    for (size_t rows_count = 1; rows_count <= 5; rows_count += 2)
        for (size_t i = 0; i < sizeof row_lens / sizeof row_lens[0]; i++) {
            test_softmax(rows_count, row_lens[i], 3.0f);
            test_softmax(rows_count, row_lens[i], 60.0f); /* probabilities down to e^-120 */
        }
    printf("neon kernels: %d cases, %d failed\n", cases, failures);
    return failures ? 1 : 0;
}
