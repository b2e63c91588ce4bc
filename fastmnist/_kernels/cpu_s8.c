#include "cpu_s8.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1UL << 13)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
/* AMX-TILE and AMX-INT8 in CPUID, and Linux's permission for this process to use the tile registers (asked
 * once; the kernel refuses where it cannot save them). */
static int amx_usable(void)
{
    static int usable = -1;
    if (usable < 0) {
        unsigned a, b, c, d;
        const int has = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25));
        usable = has && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return usable;
}
#endif

const char *fm_s8_isa_name(fm_s8_isa isa)
{
    static const char *const names[FM_S8_ISA_COUNT] = {"scalar", "avx2", "avxvnni", "avx512vnni", "neon_i8mm", "amx",
                                                        "neon_dotprod"};
    return (unsigned)isa < FM_S8_ISA_COUNT ? names[isa] : "unknown";
}

int fm_s8_isa_compiled(fm_s8_isa isa)
{
    switch (isa) {
    case FM_S8_ISA_SCALAR: return 1;
#ifdef FM_HAVE_S8_AVX2
    case FM_S8_ISA_AVX2: return 1;
#endif
#ifdef FM_HAVE_S8_AVXVNNI
    case FM_S8_ISA_AVXVNNI: return 1;
#endif
#ifdef FM_HAVE_S8_AVX512VNNI
    case FM_S8_ISA_AVX512VNNI: return 1;
#endif
#ifdef FM_HAVE_S8_NEON_I8MM
    case FM_S8_ISA_NEON_I8MM: return 1;
#endif
#ifdef FM_HAVE_S8_NEON_DOTPROD
    case FM_S8_ISA_NEON_DOTPROD: return 1;
#endif
#if defined(FM_HAVE_S8_AMX) && defined(FM_HAVE_S8_AVX512VNNI)
    case FM_S8_ISA_AMX: return 1;
#endif
    default: return 0;
    }
}

int fm_s8_isa_supported(fm_s8_isa isa)
{
    if (!fm_s8_isa_compiled(isa))
        return 0;
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV) */
    __builtin_cpu_init();
    if (isa == FM_S8_ISA_AVX2)
        return __builtin_cpu_supports("avx2");
    if (isa == FM_S8_ISA_AVXVNNI)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    if (isa == FM_S8_ISA_AVX512VNNI)
        return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
#endif
    if (isa == FM_S8_ISA_AMX) { /* elsewhere than Linux the tile registers' permission is not asked for */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
        return fm_s8_isa_supported(FM_S8_ISA_AVX512VNNI) && __builtin_cpu_supports("avx512vbmi") && amx_usable();
#else
        return 0;
#endif
    }
    if (isa == FM_S8_ISA_NEON_I8MM) { /* read from HWCAP2 on Linux; elsewhere not assumed */
#if defined(__aarch64__) && defined(__linux__)
        return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#else
        return 0;
#endif
    }
    if (isa == FM_S8_ISA_NEON_DOTPROD) { /* read from HWCAP on Linux; elsewhere not assumed */
#if defined(__aarch64__) && defined(__linux__)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
        return 0;
#endif
    }
    return 1; /* scalar */
}

fm_s8_isa fm_s8_isa_best(void)
{
    static const fm_s8_isa preference[] = {FM_S8_ISA_AMX, FM_S8_ISA_AVX512VNNI, FM_S8_ISA_AVXVNNI, FM_S8_ISA_AVX2,
                                            FM_S8_ISA_NEON_I8MM, FM_S8_ISA_NEON_DOTPROD};
    for (unsigned i = 0; i < sizeof preference / sizeof preference[0]; i++)
        if (fm_s8_isa_supported(preference[i]))
            return preference[i];
    return FM_S8_ISA_SCALAR;
}
