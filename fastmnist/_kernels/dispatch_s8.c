#include "dispatch_s8.h"

#include <string.h>

#include "conv2d_s8.h"
#include "dense_s8.h"

/* The scalar path reads the Keras layouts, so "packing" is a copy. */
static size_t dense_size(size_t in_dim, size_t out_dim) { return in_dim * out_dim; }
static void dense_copy(int8_t *packed, const int8_t *kernel, size_t in_dim, size_t out_dim)
{
    memcpy(packed, kernel, in_dim * out_dim);
}
static size_t conv2d_size(const fm_window *w) { return w->k_h * w->k_w * w->in_c * w->out_c; }
static void conv2d_copy(int8_t *packed, const int8_t *kernel, const fm_window *w)
{
    memcpy(packed, kernel, conv2d_size(w));
}

#define FM_S8_FAST_KERNELS(isa_enum, isa)                                                               \
    {isa_enum, fm_dense_s8_packed_size__##isa, fm_dense_s8_pack__##isa, fm_dense_s8_columns__##isa,             \
     fm_conv2d_s8_packed_size__##isa, fm_conv2d_s8_pack__##isa, fm_conv2d_s8__##isa}

static const fm_s8_kernels table[FM_S8_ISA_COUNT] = {
    [FM_S8_ISA_SCALAR] = {FM_S8_ISA_SCALAR, dense_size, dense_copy, NULL, conv2d_size, conv2d_copy, NULL},
#ifdef FM_HAVE_S8_AVX2
    [FM_S8_ISA_AVX2] = FM_S8_FAST_KERNELS(FM_S8_ISA_AVX2, avx2),
#endif
#ifdef FM_HAVE_S8_AVXVNNI
    [FM_S8_ISA_AVXVNNI] = FM_S8_FAST_KERNELS(FM_S8_ISA_AVXVNNI, avxvnni),
#endif
#ifdef FM_HAVE_S8_AVX512VNNI
    [FM_S8_ISA_AVX512VNNI] = FM_S8_FAST_KERNELS(FM_S8_ISA_AVX512VNNI, avx512vnni),
#endif
#if defined(FM_HAVE_S8_AMX) && defined(FM_HAVE_S8_AVX512VNNI)
    [FM_S8_ISA_AMX] = {FM_S8_ISA_AMX, fm_dense_s8_packed_size__amx, fm_dense_s8_pack__amx,
                       fm_dense_s8_columns__amx, fm_conv2d_s8_packed_size__amx, fm_conv2d_s8_pack__amx, fm_conv2d_s8__amx},
#endif
#ifdef FM_HAVE_S8_NEON_I8MM
    [FM_S8_ISA_NEON_I8MM] = FM_S8_FAST_KERNELS(FM_S8_ISA_NEON_I8MM, neon_i8mm),
#endif
#ifdef FM_HAVE_S8_NEON_DOTPROD
    [FM_S8_ISA_NEON_DOTPROD] = FM_S8_FAST_KERNELS(FM_S8_ISA_NEON_DOTPROD, neon_dotprod),
#endif
};

const fm_s8_kernels *fm_s8_kernels_for(fm_s8_isa isa)
{
    return fm_s8_isa_supported(isa) ? &table[isa] : NULL;
}
