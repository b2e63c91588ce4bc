/* The int8 fast path of one ISA against the scalar path, bit for bit, on random odd shapes: compiled with
 * FM_S8_ISA_SUFFIX set to the path (tests/test_int8_kernels_c.py builds it, natively and for AArch64 under
 * qemu). Dense rows carry random bytes past their last input and a conv2d kernel row's last group of 4 reads
 * the next pixel's bytes: every path must ignore them. Prints one line per failing case and exits 1 if there
 * is any. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"
#include "conv2d_s8.h"
#include "dense_s8.h"

#define CONCAT_(a, b) a##__##b
#define CONCAT(a, b) CONCAT_(a, b)
#define FAST(name) CONCAT(name, FM_S8_ISA_SUFFIX)

static uint64_t state = 88172645463325252u;
static uint32_t next(void) /* xorshift64: the same cases on every machine */
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint32_t)(state >> 16);
}
static int between(int lo, int hi) { return lo + (int)(next() % (uint32_t)(hi - lo + 1)); }

static void *zeroed(size_t bytes) { return calloc(bytes + 64, 1); }

/* Requantization parameters for `channels` channels: an output spread over 0..255, a table or logits. */
typedef struct {
    int32_t *multiplier, *shift, *mask;
    uint8_t table[256];
    float *dequantize;
    fm_requant rq;
} params;

static void make_params(params *p, size_t channels, size_t taps, int kind)
{
    const size_t padded = (channels + FM_S8_CHANNEL_ALIGN - 1) / FM_S8_CHANNEL_ALIGN * FM_S8_CHANNEL_ALIGN;
    p->multiplier = zeroed(padded * 4), p->shift = zeroed(padded * 4), p->mask = zeroed(padded * 4);
    p->dequantize = zeroed(padded * 4);
    int base_shift = 0; /* about log2(sqrt(taps) * 255 * 127 / 64): outputs of a few tens of units */
    for (size_t t = taps * 255 * 255; t > 64 * 64; t /= 4)
        base_shift++;
    for (size_t c = 0; c < channels; c++) {
        p->multiplier[c] = (int32_t)((1u << 30) + (next() & 0x3fffffff));
        p->shift[c] = base_shift + between(-2, 2) < 0 ? 0 : base_shift + between(-2, 2);
        p->shift[c] = p->shift[c] > 31 ? 31 : p->shift[c];
        p->mask[c] = (int32_t)((1ull << p->shift[c]) - 1);
        p->dequantize[c] = (float)between(1, 1000) * 1e-4f;
    }
    for (int i = 0; i < 256; i++)
        p->table[i] = (uint8_t)next();
    memset(&p->rq, 0, sizeof p->rq);
    p->rq.multiplier = p->multiplier, p->rq.shift = p->shift, p->rq.mask = p->mask;
    p->rq.zero_point = between(0, 255), p->rq.lo = kind == 1 ? p->rq.zero_point : 0, p->rq.hi = 255;
    p->rq.table = kind == 2 ? p->table : NULL;
    p->rq.dequantize = kind == 3 ? p->dequantize : NULL;
}

static void free_params(params *p) { free(p->multiplier), free(p->shift), free(p->mask), free(p->dequantize); }

static void fill_input(uint8_t *x, size_t count)
{
    const int zeros = between(0, 95); /* percent: from dense to nearly blank, as MNIST's inputs are */
    for (size_t i = 0; i < count; i++)
        x[i] = between(0, 99) < zeros ? 0 : (uint8_t)next();
}

/* bias - zero_point * sum over the kernel's column: what the fast paths take */
static void fold(int32_t *folded, const int32_t *bias, const int8_t *kernel, size_t taps, size_t channels, int32_t zp)
{
    for (size_t c = 0; c < channels; c++) {
        int32_t sum = 0;
        for (size_t t = 0; t < taps; t++)
            sum += kernel[t * channels + c];
        folded[c] = bias[c] - zp * sum;
    }
}

static int dense_case(int index)
{
    static const size_t in_dims[] = {1, 3, 4, 5, 17, 63, 64, 65, 300, 784};
    static const size_t out_dims[] = {1, 3, 10, 16, 17, 33, 129, 300};
    static const size_t row_counts[] = {1, 2, 3, 4, 5, 7, 65};
    const size_t in_dim = in_dims[next() % 10], out_dim = out_dims[next() % 8], rows = row_counts[next() % 7];
    const int kind = between(0, 3);
    const size_t in_stride = (in_dim + 3) / 4 * 4 + 4 * (size_t)between(0, 3);
    const size_t element = kind == 3 ? sizeof(float) : 1, out_stride = out_dim + (size_t)between(0, 5);
    uint8_t *in = zeroed(rows * in_stride);
    int8_t *kernel = zeroed(in_dim * out_dim);
    int32_t *bias = zeroed((out_dim + FM_S8_CHANNEL_ALIGN) * 4), *folded = zeroed((out_dim + FM_S8_CHANNEL_ALIGN) * 4);
    fill_input(in, rows * in_stride);
    for (size_t i = 0; i < in_dim * out_dim; i++)
        kernel[i] = (int8_t)between(-128, 127);
    for (size_t c = 0; c < out_dim; c++)
        bias[c] = between(-100000, 100000);
    const int32_t zp = between(0, 3) == 0 ? between(1, 255) : 0;
    fold(folded, bias, kernel, in_dim, out_dim, zp);
    params p;
    make_params(&p, out_dim, in_dim, kind);
    int8_t *packed = zeroed(FAST(fm_dense_s8_packed_size)(in_dim, out_dim));
    FAST(fm_dense_s8_pack)(packed, kernel, in_dim, out_dim);
    uint32_t *scratch = zeroed(fm_dense_s8_scratch_size(rows, in_dim) * 4);
    uint8_t *expected = zeroed(rows * out_stride * element), *got = zeroed(rows * out_stride * element);
    fm_dense_s8(expected, in, kernel, bias, zp, rows, in_dim, in_stride, out_dim, out_stride, &p.rq);
    FAST(fm_dense_s8)(got, in, packed, folded, rows, in_dim, in_stride, out_dim, out_stride, &p.rq, scratch);
    int failed = 0;
    for (size_t r = 0; r < rows && !failed; r++)
        failed = memcmp(expected + r * out_stride * element, got + r * out_stride * element, out_dim * element) != 0;
    if (failed)
        printf("dense case %d: in_dim %zu out_dim %zu rows %zu kind %d zero point %d differs\n", index, in_dim,
               out_dim, rows, kind, zp);
    free(in), free(kernel), free(bias), free(folded), free(packed), free(scratch), free(expected), free(got);
    free_params(&p);
    return failed;
}

static int conv_case(int index)
{
    static const size_t channels_in[] = {1, 2, 3, 5, 8, 32};
    /* past 64: the scalar path's blocks of output channels, whole and partial */
    static const size_t channels_out[] = {1, 3, 4, 17, 32, 33, 64, 65, 130};
    fm_window w;
    memset(&w, 0, sizeof w);
    w.in_h = (size_t)between(1, 14), w.in_w = (size_t)between(1, 14), w.in_c = channels_in[next() % 6];
    w.k_h = (size_t)between(1, 5), w.k_w = (size_t)between(1, 5);
    w.stride_y = (size_t)between(1, 2), w.stride_x = (size_t)between(1, 2);
    const size_t pad[4] = {(size_t)between(0, 2), (size_t)between(0, 2), (size_t)between(0, 2), (size_t)between(0, 2)};
    if (w.in_h + pad[0] + pad[1] < w.k_h || w.in_w + pad[2] + pad[3] < w.k_w)
        return 0; /* no output pixel: not a layer the format accepts */
    w.pad_top = pad[0], w.pad_left = pad[2];
    w.out_h = (w.in_h + pad[0] + pad[1] - w.k_h) / w.stride_y + 1;
    w.out_w = (w.in_w + pad[2] + pad[3] - w.k_w) / w.stride_x + 1;
    w.out_c = channels_out[next() % 9];
    const int kind = between(0, 2);
    const size_t taps = w.k_h * w.k_w * w.in_c, in_values = w.in_h * w.in_w * w.in_c;
    const size_t out_values = w.out_h * w.out_w * w.out_c;
    uint8_t *in = zeroed(in_values), *padded = zeroed(fm_conv2d_s8_padded_size(&w));
    int8_t *kernel = zeroed(taps * w.out_c);
    int32_t *bias = zeroed((w.out_c + FM_S8_CHANNEL_ALIGN) * 4), *folded = zeroed((w.out_c + FM_S8_CHANNEL_ALIGN) * 4);
    fill_input(in, in_values);
    for (size_t i = 0; i < taps * w.out_c; i++)
        kernel[i] = (int8_t)between(-128, 127);
    for (size_t c = 0; c < w.out_c; c++)
        bias[c] = between(-100000, 100000);
    const int32_t zp = between(0, 2) == 0 ? between(1, 255) : 0;
    fold(folded, bias, kernel, taps, w.out_c, zp);
    params p;
    make_params(&p, w.out_c, taps, kind);
    int8_t *packed = zeroed(FAST(fm_conv2d_s8_packed_size)(&w));
    FAST(fm_conv2d_s8_pack)(packed, kernel, &w);
    uint32_t *scratch = zeroed(fm_conv2d_s8_scratch_size(&w) * 4);
    uint8_t *expected = zeroed(out_values), *got = zeroed(out_values);
    fm_conv2d_s8(expected, in, kernel, bias, zp, &w, 0, w.out_h * w.out_w, &p.rq);
    fm_conv2d_pad_u8(padded, in, (uint8_t)zp, &w, 0, fm_conv2d_padded_h(&w));
    FAST(fm_conv2d_s8)(got, padded, packed, folded, &w, 0, w.out_h, &p.rq, scratch);
    const int failed = memcmp(expected, got, out_values) != 0;
    if (failed)
        printf("conv2d case %d: in %zux%zux%zu kernel %zux%zu strides %zux%zu pads %zu %zu %zu %zu out_c %zu "
               "kind %d zero point %d differs\n", index, w.in_h, w.in_w, w.in_c, w.k_h, w.k_w, w.stride_y,
               w.stride_x, pad[0], pad[1], pad[2], pad[3], w.out_c, kind, zp);
    free(in), free(padded), free(kernel), free(bias), free(folded), free(packed), free(scratch), free(expected);
    free(got), free_params(&p);
    return failed;
}

int main(int argc, char **argv)
{
    const int cases = argc > 1 ? atoi(argv[1]) : 300;
    int failures = 0;
    for (int i = 0; i < cases; i++)
        failures += dense_case(i) + conv_case(i);
    printf("%d dense and %d conv2d cases, %d failures\n", cases, cases, failures);
    return failures != 0;
}
