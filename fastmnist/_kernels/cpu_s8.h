/* The instruction sets the int8 kernels come in, and which of them this binary and this CPU can run. A list
 * of its own: the int8 paths are chosen by the dot-product instructions a CPU has, which the float kernels
 * do not use. */
#ifndef FM_CPU_S8_H
#define FM_CPU_S8_H

typedef enum {
    FM_S8_ISA_SCALAR = 0,
    FM_S8_ISA_AVX2 = 1,         /* x86-64 AVX2: bytes widened to 16 bits, VPMADDWD */
    FM_S8_ISA_AVXVNNI = 2,      /* x86-64 AVX-VNNI: VEX-encoded VPDPBUSD on 256-bit vectors */
    FM_S8_ISA_AVX512VNNI = 3,   /* x86-64 AVX-512 VNNI: VPDPBUSD on 512-bit vectors */
    FM_S8_ISA_NEON_I8MM = 4,    /* AArch64 with the int8 matrix extension: USDOT */
    FM_S8_ISA_AMX = 5,          /* x86-64 AMX-INT8 tiles (TDPBUSD), with AVX-512 VNNI for what tiles do not fit */
    FM_S8_ISA_NEON_DOTPROD = 6, /* AArch64 with the dot product extension: UDOT on weights offset to unsigned */
    FM_S8_ISA_COUNT = 7,
} fm_s8_isa;

const char *fm_s8_isa_name(fm_s8_isa isa);
int fm_s8_isa_compiled(fm_s8_isa isa);  /* the build included this path */
int fm_s8_isa_supported(fm_s8_isa isa); /* compiled, and this CPU and OS can run it */
fm_s8_isa fm_s8_isa_best(void);         /* the fastest supported path */

#endif
