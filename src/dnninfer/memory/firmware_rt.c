/* Bare-metal runtime for a generated model.c on an emulated Cortex-M (dnninfer.memory.firmware).
 *
 * No C library start-up: our own vector table and reset handler (copy .data, zero .bss, paint the
 * stack, call fw_main), ARM semihosting through `bkpt 0xAB` (SYS_WRITE0 to print, SYS_EXIT to stop), and
 * the CMSDK APB timer 0 of the MPS2 boards (32-bit down-counter at the 25 MHz system clock) read
 * around model_invoke(). Under `qemu -icount shift=0` one instruction is 1 ns of virtual time, so one
 * timer tick is 40 instructions. newlib's rdimon crt0 is not used: it takes its stack from the
 * semihosting heap info, outside the linker script's RAM, and locked up on mps2-an386.
 *
 * The only RAM this file adds is stack: no .data, no .bss (the firmware input lives in flash, the
 * output buffer and the text line on the stack), so RAM = the model's pool + scratch + stack. The
 * stack sits at the bottom of RAM (firmware.ld); its painted words show its high-water mark.
 * The entry point is fw_main, not main: model.c keeps its own MCU main, which the link drops.
 *
 * Output, one line each: "out <hex>" (32 output bytes a line, in order), "ticks <n>",
 * "stack <bytes used> <bytes reserved>", "done".
 */
#include <stddef.h>
#include <stdint.h>
#include "model.h"

extern const int8_t fw_input[MODEL_INPUT_BYTES];  /* fw_input.c: the input, in flash */

/* linker symbols (firmware.ld) */
extern uint8_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];

#define STACK_PAINT 0x5AA5C33Cu
#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)

int fw_main(void);

/* -- semihosting -------------------------------------------------------------------------------- */

static int32_t semihost(int32_t op, const void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void put(const char *s) { semihost(0x04, s); }  /* SYS_WRITE0: a NUL-terminated string */

static void __attribute__((noreturn)) stop(int ok) {
    /* SYS_EXIT: ADP_Stopped_ApplicationExit makes qemu exit 0, RunTimeErrorUnknown exits 1 */
    semihost(0x18, (const void *)(ok ? 0x20026 : 0x20023));
    for (;;) {
    }
}

static void put_uint(const char *tag, uint32_t v, uint32_t w) {
    char line[40];
    int32_t n = 0, i;
    char digits[10];
    while (*tag) line[n++] = *tag++;
    for (i = 0; v || i == 0; v /= 10) digits[i++] = (char)('0' + v % 10);
    while (i) line[n++] = digits[--i];
    if (w != 0xFFFFFFFFu) {
        line[n++] = ' ';
        for (i = 0; w || i == 0; w /= 10) digits[i++] = (char)('0' + w % 10);
        while (i) line[n++] = digits[--i];
    }
    line[n++] = '\n';
    line[n] = 0;
    put(line);
}

/* -- vector table and handlers ------------------------------------------------------------------ */

void Reset_Handler(void);

static void Fault_Handler(void) {
    put("fault\n");
    stop(0);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};

void Reset_Handler(void) {
    uint8_t *src = __data_load, *dst;  /* byte loops: the pool and scratch need not be word-sized */
    uint32_t *w, *sp;
    for (dst = __data_start; dst < __data_end;) *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end;) *dst++ = 0;
    /* paint the stack below this frame (the loop itself pushes nothing), to measure its high-water mark */
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (w = __stack_limit; w < sp - 16;) *w++ = STACK_PAINT;
    stop(fw_main() == 0);
}

/* -- the run ------------------------------------------------------------------------------------ */

static const char HEX[] = "0123456789abcdef";

int fw_main(void) {  /* not main: model.c has its own, unused here */
    int8_t out[MODEL_OUTPUT_BYTES];
    char line[4 + 64 + 2];
    int8_t *in = model_input_buffer();
    uint32_t t0, t1, *p;
    int32_t i, j, n;

    for (i = 0; i < MODEL_INPUT_BYTES; ++i) in[i] = fw_input[i];
    TIMER0_CTRL = 0;
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1;  /* enable, system clock, no interrupt */
    t0 = TIMER0_VALUE;
    model_invoke();
    t1 = TIMER0_VALUE;
    TIMER0_CTRL = 0;

    model_get_output(out);
    for (i = 0; i < MODEL_OUTPUT_BYTES; i += 32) {
        n = 0;
        line[n++] = 'o', line[n++] = 'u', line[n++] = 't', line[n++] = ' ';
        for (j = i; j < i + 32 && j < MODEL_OUTPUT_BYTES; ++j) {
            line[n++] = HEX[((uint8_t)out[j]) >> 4];
            line[n++] = HEX[((uint8_t)out[j]) & 15];
        }
        line[n++] = '\n';
        line[n] = 0;
        put(line);
    }
    put_uint("ticks ", t0 - t1, 0xFFFFFFFFu);
    for (p = __stack_limit; p < __stack_top && *p == STACK_PAINT; ++p) {
    }
    put_uint("stack ", (uint32_t)((uint8_t *)__stack_top - (uint8_t *)p),
             (uint32_t)((uint8_t *)__stack_top - (uint8_t *)__stack_limit));
    put("done\n");
    return 0;
}

/* gcc may call these for struct or array copies; no C library is linked */
void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--) *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, size_t n) {
    uint8_t *dp = d;
    while (n--) *dp++ = (uint8_t)c;
    return d;
}
