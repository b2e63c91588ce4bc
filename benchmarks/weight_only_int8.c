/* Weight-only int8 against float32 and full int8, at batch 1 on mlp1024's hidden layer (784 -> 1024, the layer
 * whose weights dominate): does reading int8 weights and converting them to float pay for a layer bound by
 * streaming its weights? A short timing loop for that one question, not part of the benchmark:
 *
 *   gcc -O3 -march=native -Wno-psabi -Ifastmnist/_kernels -DFM_ISA_SUFFIX=avx512 -DFM_VECTOR_WIDTH=16 \
 *       -DFM_S8_ISA_SUFFIX=avx512vnni benchmarks/weight_only_int8.c fastmnist/_kernels/dense_simd.c \
 *       fastmnist/_kernels/dense_s8_simd.c -o weight_only && ./weight_only
 *
 * Inputs: a digit-like image (a fifth of the pixels nonzero); every variant skips the zero inputs. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dense.h"
#include "dense_s8.h"

#define IN 784
#define OUT 1024
#define REPS 2000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) { return (*(const double *)a > *(const double *)b) - (*(const double *)a < *(const double *)b); }

/* float outputs = scale[o] * sum_k x[k] * w8[k][o] over the nonzero x[k]: int8 weights, float arithmetic,
 * 256 outputs (16 vectors) per pass over the list of nonzero inputs */
static void dense_weight_only(float *out, const float *x, const int8_t *w8, const float *scale, const float *bias)
{
    int list[IN], count = 0;
    for (int k = 0; k < IN; k++) {
        list[count] = k;
        count += x[k] != 0.0f;
    }
    for (int o0 = 0; o0 < OUT; o0 += 256) {
        __m512 acc[16];
        for (int j = 0; j < 16; j++)
            acc[j] = _mm512_setzero_ps();
        for (int i = 0; i < count; i++) {
            const int k = list[i];
            const __m512 xk = _mm512_set1_ps(x[k]);
            for (int j = 0; j < 16; j++) {
                const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w8 + (size_t)k * OUT + o0 + 16 * j))));
                acc[j] = _mm512_fmadd_ps(xk, w, acc[j]);
            }
        }
        for (int j = 0; j < 16; j++) {
            const __m512 y = _mm512_fmadd_ps(acc[j], _mm512_loadu_ps(scale + o0 + 16 * j), _mm512_loadu_ps(bias + o0 + 16 * j));
            _mm512_storeu_ps(out + o0 + 16 * j, _mm512_max_ps(y, _mm512_setzero_ps()));
        }
    }
}

static double median_us(void (*run)(void *), void *arg)
{
    static double samples[REPS];
    for (int i = 0; i < 200; i++)
        run(arg);
    for (int i = 0; i < REPS; i++) {
        const double start = now();
        run(arg);
        samples[i] = (now() - start) * 1e6;
    }
    qsort(samples, REPS, sizeof samples[0], compare);
    return samples[REPS / 2];
}

static float x[IN], kernel[IN * OUT], bias[1024], scale[OUT], out[OUT];
static int8_t w8[IN * OUT];
static uint8_t xq[IN], yq[OUT];
static float *packed;
static int8_t *packed8;
static int32_t bias32[OUT], multiplier[OUT], shift[OUT], mask[OUT];
static uint32_t active[8192];
static fm_requant rq;

static void run_f32(void *arg) { (void)arg; fm_dense_f32__avx512(out, x, packed, bias, 1, IN, OUT, 0, OUT, FM_ACTIVATION_RELU, active); }
static void run_weight_only(void *arg) { (void)arg; dense_weight_only(out, x, w8, scale, bias); }
static void run_int8(void *arg)
{
    (void)arg;
    for (int k = 0; k < IN; k++) /* the input quantized, as the int8 executor does */
        xq[k] = (uint8_t)__builtin_nearbyintf(x[k] * 255.0f);
    fm_dense_s8__avx512vnni(yq, xq, packed8, bias32, 1, IN, IN, OUT, OUT, &rq, active);
}

int main(void)
{
    srand(1);
    for (int k = 0; k < IN; k++)
        x[k] = rand() % 5 == 0 ? (float)(rand() % 256) / 255.0f : 0.0f;
    for (int i = 0; i < IN * OUT; i++) {
        w8[i] = (int8_t)(rand() % 255 - 127);
        kernel[i] = w8[i] * 0.01f;
    }
    for (int o = 0; o < OUT; o++)
        scale[o] = 0.01f, multiplier[o] = 1 << 30, shift[o] = 12, mask[o] = (1 << 12) - 1;
    packed = aligned_alloc(64, fm_dense_packed_size__avx512(IN, OUT) * sizeof(float));
    fm_dense_pack_f32__avx512(packed, kernel, IN, OUT);
    packed8 = aligned_alloc(64, fm_dense_s8_packed_size__avx512vnni(IN, OUT));
    fm_dense_s8_pack__avx512vnni(packed8, w8, IN, OUT);
    rq.multiplier = multiplier, rq.shift = shift, rq.mask = mask, rq.hi = 255;
    printf("batch 1, 784 -> 1024, relu, median of %d calls:\n", REPS);
    printf("  float32 weights, float32 arithmetic (fastmnist avx512): %6.2f us\n", median_us(run_f32, NULL));
    printf("  int8 weights, float32 arithmetic (weight-only):         %6.2f us\n", median_us(run_weight_only, NULL));
    printf("  int8 weights, int8 arithmetic (fastmnist avx512vnni):   %6.2f us\n", median_us(run_int8, NULL));
    return 0;
}
