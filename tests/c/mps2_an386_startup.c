/* A minimal start for a test program on QEMU's mps2-an386 (Cortex-M4F): the vector table, .data and .bss
 * set up, the FPU on, the stack painted, main, then semihosting (QEMU's -semihosting) for output and exit. */
#include <stdint.h>

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_limit[],
    __stack_top[];
int main(void);
void reset_handler(void);
void semihosting_write(const char *text);
void semihosting_exit(void);
unsigned long stack_bytes_used(void);

#define STACK_PAINT 0x5a5a5a5au
#define CPACR (*(volatile uint32_t *)0xE000ED88u)

static void fault_handler(void)
{
    semihosting_write("fault\n");
    semihosting_exit();
}

/* The initial stack pointer, then reset and the faults (NMI, hard, memory management, bus, usage). */
__attribute__((section(".vectors"), used)) static const struct {
    uint32_t *initial_stack;
    void (*handlers[6])(void);
} vectors = {__stack_top, {reset_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler}};

void reset_handler(void)
{
    for (uint32_t *from = __data_load, *to = __data_start; to < __data_end;)
        *to++ = *from++;
    for (uint32_t *p = __bss_start; p < __bss_end;)
        *p++ = 0;
    CPACR |= 0xFu << 20; /* CP10 and CP11, the FPU: full access */
    __asm__ volatile("dsb\n\tisb");
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_limit; p < sp - 16;)
        *p++ = STACK_PAINT;
    main();
    semihosting_exit();
}

unsigned long stack_bytes_used(void)
{
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT)
        p++;
    return (unsigned long)((const char *)__stack_top - (const char *)p);
}

static int semihosting_call(int operation, const void *argument)
{
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihosting_write(const char *text) { semihosting_call(0x04, text); } /* SYS_WRITE0 */

void semihosting_exit(void)
{
    semihosting_call(0x18, (const void *)0x20026); /* SYS_EXIT, ADP_Stopped_ApplicationExit */
    for (;;) {
    }
}
