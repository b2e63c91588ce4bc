/* The instruction sets the kernels come in, and which of them this binary and this CPU can run. */
#ifndef FM_CPU_H
#define FM_CPU_H

typedef enum {
    FM_ISA_SCALAR = 0,
    FM_ISA_AVX2 = 1,   /* x86-64 AVX2 + FMA */
    FM_ISA_AVX512 = 2, /* x86-64 AVX-512F */
    FM_ISA_NEON = 3,   /* AArch64 Advanced SIMD */
    FM_ISA_COUNT = 4,
} fm_isa;

const char *fm_isa_name(fm_isa isa);
int fm_isa_compiled(fm_isa isa);  /* the build included this path */
int fm_isa_supported(fm_isa isa); /* compiled, and this CPU and OS can run it */
fm_isa fm_isa_best(void);         /* the widest supported path */

#endif
