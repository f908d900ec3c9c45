/*
 * tmlrepair device harness, POSIX port: the virtual device behind `--serial sim`.
 * The same protocol code as the firmware, talking over stdin/stdout (the host gives it one end of a
 * pseudo-terminal). SIGUSR1 restarts the device as a power cycle would: parameters, shim state and any
 * half-received frame are lost, the link stays. The counter is CLOCK_MONOTONIC in nanoseconds.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tmlr_device.h"
#include "tmlr_port.h"

const tmlr_model *tmlr_port_model(void); /* the model table, or NULL for shim-only firmware */

static tmlr_device g_device;
static volatile sig_atomic_t g_restart;
static int g_reboot;

void tmlr_port_write(const uint8_t *bytes, size_t n)
{
    while (n > 0) {
        const ssize_t w = write(STDOUT_FILENO, bytes, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            exit(3);
        }
        bytes += w;
        n -= (size_t)w;
    }
}

uint64_t tmlr_port_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t tmlr_port_counter_hz(void) { return 1000000000u; }

void tmlr_port_counter_edge(void) {}

const char *tmlr_port_board(void)
{
#if defined(__x86_64__)
    return "posix x86_64";
#elif defined(__aarch64__)
    return "posix aarch64";
#else
    return "posix";
#endif
}

void tmlr_port_reboot(void) { g_reboot = 1; }

static void on_restart(int sig)
{
    (void)sig;
    g_restart = 1;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_restart; /* no SA_RESTART: a blocked read returns EINTR and the restart is seen at once */
    sigaction(SIGUSR1, &sa, NULL);
    tmlr_device_init(&g_device, tmlr_port_model());
    static uint8_t buf[4096];
    for (;;) {
        const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (g_restart) { /* bytes that arrive across a power cycle are lost, as on a board */
            g_restart = 0;
            tmlr_device_init(&g_device, tmlr_port_model());
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return 0; /* the host closed the link */
        }
        for (ssize_t i = 0; i < n && !g_reboot; i++) {
            tmlr_device_rx(&g_device, buf[i]);
        }
        if (g_reboot) { /* RESET mode 2: the rest of this read is lost with the reboot */
            g_reboot = 0;
            tmlr_device_init(&g_device, tmlr_port_model());
        }
    }
}
