/*
 * tmlrepair device harness, Arm MPS2 AN386 port (Cortex-M4F): the firmware behind `--serial qemu`.
 * Runs on QEMU's mps2-an386 machine and on the real FPGA image. UART0 is the CMSDK APB UART at 0x40004000
 * (polled within a frame; WFI and its RX interrupt between frames, so an idle emulator uses no CPU); the counter
 * is SysTick at SYSCLK (25 MHz), extended to 64 bits by its wrap interrupt. Under QEMU with `-icount shift=0` one
 * instruction takes 1 ns of virtual time, so a SysTick tick is exactly 40 instructions.
 */
#include <stdint.h>

#include "tmlr_device.h"
#include "tmlr_port.h"

#define SYSCLK_HZ 25000000u
#define UART0 0x40004000u
#define UART0_RX_IRQ 0
#define REG32(a) (*(volatile uint32_t *)(a))
#define UART_DATA REG32(UART0 + 0x00u)
#define UART_STATE REG32(UART0 + 0x04u) /* bit0 TX full, bit1 RX full */
#define UART_CTRL REG32(UART0 + 0x08u)  /* bit0 TX enable, bit1 RX enable, bit3 RX interrupt */
#define UART_INT REG32(UART0 + 0x0Cu)   /* write 1 to clear; bit1 RX */
#define UART_BAUDDIV REG32(UART0 + 0x10u)
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define NVIC_ISER0 REG32(0xE000E100u)
#define SCB_ICSR REG32(0xE000ED04u)
#define SCB_VTOR REG32(0xE000ED08u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_CPACR REG32(0xE000ED88u)
#define SYSTICK_RELOAD 0x00FFFFFFu
/* UART polls before the core sleeps (WFI) for the next byte. A frame's bytes come back to back, and QEMU hands its
 * UART one byte per turn of its main loop (the RX holds one); waking a sleeping core for each made that ~58 µs of host
 * time a byte, polled ~35: an INFER of digits' 784-byte input 44-48 → 24-40 ms, `calibrate --serial qemu` on digits
 * 99 → 61 s (docs/reference_device.md). Idle, the core still sleeps (QEMU at 0% CPU). On the FPGA board at 25 MHz,
 * 4,000 polls are ~0.8 ms, against 87 µs a byte at 115200 baud: it sleeps between frames, not between bytes. */
#define TMLR_RX_POLLS 4000u

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
const tmlr_model *tmlr_port_model(void);
int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void);
void Uart0Rx_Handler(void);

static volatile uint32_t g_systick_wraps;
static tmlr_device g_device;

__attribute__((section(".isr_vector"), used)) void (*const g_vectors[16 + 32])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, HardFault_Handler, HardFault_Handler,
    HardFault_Handler, HardFault_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    SysTick_Handler, [16 + 1 ... 16 + 31] = Default_Handler, [16 + UART0_RX_IRQ] = Uart0Rx_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11: the FPU, in case a model kernel uses it */
    __asm__ volatile("dsb\n isb");
    SCB_VTOR = (uint32_t)g_vectors;
    (void)main();
    for (;;) {
    }
}

void SysTick_Handler(void) { g_systick_wraps++; }
void Uart0Rx_Handler(void) { UART_INT = 0x2u; }

static void reboot_now(void)
{
    /* let the last reply leave the UART before the reset (20 ms) */
    const uint64_t t0 = tmlr_port_counter();
    while (tmlr_port_counter() - t0 < SYSCLK_HZ / 50u) {
    }
    __asm__ volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
    for (;;) {
    }
}

void hardfault_report(const uint32_t *frame);
void hardfault_report(const uint32_t *frame)
{
    tmlr_device_report_fault(frame[6]); /* stacked PC */
    reboot_now();
}

__attribute__((naked)) void HardFault_Handler(void)
{
    __asm__ volatile("tst lr, #4\n ite eq\n mrseq r0, msp\n mrsne r0, psp\n b hardfault_report\n");
}

void Default_Handler(void) { hardfault_report((const uint32_t *)0x0); }

void tmlr_port_write(const uint8_t *bytes, size_t n)
{
    while (n--) {
        while (UART_STATE & 0x1u) {
        }
        UART_DATA = *bytes++;
    }
}

uint64_t tmlr_port_counter(void)
{
    uint32_t wraps, value, pending;
    do {
        wraps = g_systick_wraps;
        value = SYST_CVR;
        pending = SCB_ICSR & (1u << 26); /* wrapped, interrupt not taken yet */
    } while (wraps != g_systick_wraps);
    if (pending && value > SYSTICK_RELOAD / 2) {
        wraps++;
    }
    return (uint64_t)wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
}

uint32_t tmlr_port_counter_hz(void) { return SYSCLK_HZ; }

void tmlr_port_counter_edge(void)
{
    const uint32_t v = SYST_CVR;
    while (SYST_CVR == v) {
    }
}

const char *tmlr_port_board(void) { return "mps2-an386 cortex-m4"; }

void tmlr_port_reboot(void) { reboot_now(); }

int main(void)
{
    UART_CTRL = 0;
    UART_BAUDDIV = SYSCLK_HZ / 115200u;
    UART_CTRL = 0x1u | 0x2u | 0x8u;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* processor clock, wrap interrupt, enable */
    for (uint32_t i = 0; i < 10000000u && SYST_CVR == 0; i++) {
        /* QEMU reads 0 until it has processed the first reload */
    }
    tmlr_device_init(&g_device, tmlr_port_model());
    for (;;) {
        for (uint32_t polls = 0; !(UART_STATE & 0x2u);) {
            if (polls < TMLR_RX_POLLS) {
                polls++;
            } else {
                __asm__ volatile("wfi");
            }
        }
        tmlr_device_rx(&g_device, (uint8_t)(UART_DATA & 0xFFu));
    }
}
