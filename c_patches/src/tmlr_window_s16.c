/* Sliding-window anomaly boundary; Python twin: repair.fixedpoint_anomaly.window_boundary_alarms. */
#include <string.h>

#include "tmlr.h"

#define TMLR_MAX_WINDOW 1024
#define TMLR_MAX_ALPHA2_Q 4095

tmlr_status tmlr_window_init_s16(tmlr_window_s16 *w, int16_t *ring, int32_t window, int32_t alpha2_q,
                                 int32_t frac_bits)
{
    if (w == NULL || ring == NULL || window < 2 || alpha2_q < 0 || alpha2_q > TMLR_MAX_ALPHA2_Q || frac_bits < 0 ||
        frac_bits > 8) {
        return TMLR_ERR_ARG;
    }
    if (window > TMLR_MAX_WINDOW) {
        return TMLR_ERR_RANGE;
    }
    memset(ring, 0, (size_t)window * sizeof(int16_t));
    w->ring = ring;
    w->window = window;
    w->head = 0;
    w->count = 0;
    w->sum = 0;
    w->sum_sq = 0;
    w->alpha2_q = alpha2_q;
    w->frac_bits = frac_bits;
    return TMLR_OK;
}

tmlr_status tmlr_window_step_s16(tmlr_window_s16 *w, int16_t x, uint8_t *alarm)
{
    if (w == NULL || w->ring == NULL || alarm == NULL) {
        return TMLR_ERR_ARG;
    }
    *alarm = 0;
    if (w->count >= w->window) {
        /* |N x - S| <= 2^26 and N Q - S^2 <= 2^50 for int16 and N <= 1024: both sides fit in int64 */
        const int64_t n = w->window;
        const int64_t dev = n * (int64_t)x - w->sum;
        const int64_t spread = n * w->sum_sq - w->sum * w->sum;
        const int64_t lhs = dev * dev * ((int64_t)1 << w->frac_bits); /* <= 2^52 * 2^8 = 2^60 */
        const int64_t rhs = (int64_t)w->alpha2_q * spread;             /* < 2^12 * 2^50 = 2^62 */
        *alarm = (uint8_t)(lhs > rhs ? 1 : 0);
    }
    {
        const int16_t old = w->ring[w->head];
        if (w->count >= w->window) {
            w->sum -= old;
            w->sum_sq -= (int64_t)old * old;
        } else {
            w->count += 1;
        }
        w->ring[w->head] = x;
        w->sum += x;
        w->sum_sq += (int64_t)x * x;
        w->head = (w->head + 1) % w->window;
    }
    return TMLR_OK;
}
