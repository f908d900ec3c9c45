/*
 * tmlrepair device harness: the porting layer. A port (ports/posix, ports/mps2-an386, or your firmware)
 * provides these six functions; the protocol code in tmlr_device.c calls nothing else of the platform.
 */
#ifndef TMLR_PORT_H
#define TMLR_PORT_H

#include <stddef.h>
#include <stdint.h>

/* Write n bytes to the serial link; may block until they are queued. */
void tmlr_port_write(const uint8_t *bytes, size_t n);

/* A free-running monotonic counter (cycles, SysTick ticks or nanoseconds) and its rate in counts per second. */
uint64_t tmlr_port_counter(void);
uint32_t tmlr_port_counter_hz(void);

/* Busy-wait until the counter changes (aligns a timed region to a tick edge; may return at once). */
void tmlr_port_counter_edge(void);

/* A short board description for hello, e.g. "mps2-an386 cortex-m4" (at most 47 characters are sent). */
const char *tmlr_port_board(void);

/* Restart the device (RESET with mode 2). Called after the reply has been written; need not return. */
void tmlr_port_reboot(void);

#endif /* TMLR_PORT_H */
