#include "cpu.h"

const char *fm_isa_name(fm_isa isa)
{
    static const char *const names[FM_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};
    return (unsigned)isa < FM_ISA_COUNT ? names[isa] : "unknown";
}

int fm_isa_compiled(fm_isa isa)
{
    switch (isa) {
    case FM_ISA_SCALAR: return 1;
#ifdef FM_HAVE_AVX2
    case FM_ISA_AVX2: return 1;
#endif
#ifdef FM_HAVE_AVX512
    case FM_ISA_AVX512: return 1;
#endif
#ifdef FM_HAVE_NEON
    case FM_ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

int fm_isa_supported(fm_isa isa)
{
    if (!fm_isa_compiled(isa))
        return 0;
#if defined(FM_HAVE_AVX2) || defined(FM_HAVE_AVX512)
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV) */
    __builtin_cpu_init();
    if (isa == FM_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == FM_ISA_AVX512)
        return __builtin_cpu_supports("avx512f");
#endif
    return 1; /* scalar, and NEON, which every AArch64 CPU has */
}

fm_isa fm_isa_best(void)
{
    static const fm_isa preference[] = {FM_ISA_AVX512, FM_ISA_AVX2, FM_ISA_NEON};
    for (unsigned i = 0; i < sizeof preference / sizeof preference[0]; i++)
        if (fm_isa_supported(preference[i]))
            return preference[i];
    return FM_ISA_SCALAR;
}
