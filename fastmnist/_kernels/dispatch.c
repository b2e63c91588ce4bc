#include "dispatch.h"

#include <string.h>

#include "activation.h"
#include "conv2d.h"
#include "dense.h"
#include "depthwise_conv2d.h"
#include "softmax.h"

/* The scalar path reads the Keras layouts, so "packing" is a copy. */
static size_t one_column(void) { return 1; }
static size_t dense_size(size_t in_dim, size_t out_dim) { return in_dim * out_dim; }
static void dense_copy(float *packed, const float *kernel, size_t in_dim, size_t out_dim)
{
    memcpy(packed, kernel, in_dim * out_dim * sizeof(float));
}
static void dense_scalar(float *out, const float *in, const float *kernel, const float *bias, size_t rows,
                         size_t in_dim, size_t out_dim, size_t col_begin, size_t col_end, fm_activation activation,
                         uint32_t *active)
{
    (void)active; /* the scalar path computes every term, zero or not */
    fm_dense_f32(out, in, kernel, bias, rows, in_dim, out_dim, col_begin, col_end, activation);
}
static size_t conv2d_size(const fm_window *w) { return w->k_h * w->k_w * w->in_c * w->out_c; }
static void conv2d_copy(float *packed, const float *kernel, const fm_window *w)
{
    memcpy(packed, kernel, conv2d_size(w) * sizeof(float));
}
static size_t depthwise_size(const fm_window *w) { return w->k_h * w->k_w * w->out_c; }
static void depthwise_copy(float *packed, const float *kernel, const fm_window *w)
{
    memcpy(packed, kernel, depthwise_size(w) * sizeof(float));
}

/* The fast paths share the depthwise layout (channels padded to FM_DEPTHWISE_CHANNEL_ALIGN). */
#define FM_FAST_KERNELS(isa_enum, isa)                                                                     \
    {isa_enum, fm_dense_panel_width__##isa, fm_dense_packed_size__##isa, fm_dense_pack_f32__##isa, fm_dense_f32__##isa,            \
     fm_conv2d_packed_size__##isa, fm_conv2d_pack_f32__##isa, fm_conv2d_f32__##isa, fm_depthwise_packed_size,  \
     fm_depthwise_pack_f32, fm_depthwise_conv2d_f32__##isa, fm_activation_f32__##isa, fm_softmax_f32__##isa}

static const fm_kernels table[FM_ISA_COUNT] = {
    [FM_ISA_SCALAR] = {FM_ISA_SCALAR, one_column, dense_size, dense_copy, dense_scalar, conv2d_size, conv2d_copy, NULL,
                       depthwise_size, depthwise_copy, NULL, fm_activation_f32, fm_softmax_f32},
#ifdef FM_HAVE_AVX2
    [FM_ISA_AVX2] = FM_FAST_KERNELS(FM_ISA_AVX2, avx2),
#endif
#ifdef FM_HAVE_AVX512
    [FM_ISA_AVX512] = FM_FAST_KERNELS(FM_ISA_AVX512, avx512),
#endif
#ifdef FM_HAVE_NEON
    [FM_ISA_NEON] = FM_FAST_KERNELS(FM_ISA_NEON, neon),
#endif
};

const fm_kernels *fm_kernels_for(fm_isa isa)
{
    return fm_isa_supported(isa) ? &table[isa] : NULL;
}
