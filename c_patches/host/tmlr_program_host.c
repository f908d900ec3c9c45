/*
 * Host build only (never on the device): the batched integer program's requantization, one pass over a layer's
 * accumulators, with the device's own arithmetic (tmlr_fixedpoint.h). repair/program/host.py builds it with the
 * host's C compiler and calls it through ctypes; without a compiler the program computes the same integers in
 * onnxruntime graphs (repair/program/graph.py).
 */
#include <stdint.h>

#include "tmlr_fixedpoint.h"

static inline int32_t tmlr_host_clamp(int32_t y, int32_t lo, int32_t hi)
{
    y = y < lo ? lo : y;
    return y > hi ? hi : y;
}

/*
 * out[n][c][i] = clamp(zp + tmlr_requantize(sums[n][c][i] + bias[c], mult[c], shift[c]), lo, hi), n < outer,
 * c < channels, i < inner; sums are float32 holding exact integers (a layer's sums without its bias), outputs
 * float32 (exact). The caller guarantees |sums + bias| < 2^31 (the device's int32 accumulator) and shifts in
 * [-31, 30]. The common case (M > 0, a right shift) is written branch-free so that the compiler vectorizes it;
 * a fully connected layer comes as one plane per channel (outer = 1, inner = samples).
 */
void tmlr_host_requantize(const float *sums, long outer, long channels, long inner, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int32_t zp, int32_t lo, int32_t hi, float *out)
{
    for (long n = 0; n < outer; ++n) {
        for (long c = 0; c < channels; ++c) {
            const float *s = sums + (n * channels + c) * inner;
            float *o = out + (n * channels + c) * inner;
            const int32_t b = bias[c];
            const int32_t m = mult[c];
            const int32_t sh = shift[c];
            if (m > 0 && sh <= -1 && sh >= -31) {
                const int32_t r = -sh;
                const int64_t nudge = tmlr_requant_nudge(r);
                for (long i = 0; i < inner; ++i) {
                    o[i] = (float)tmlr_host_clamp(zp + tmlr_requantize_right((int32_t)s[i] + b, m, r, nudge), lo, hi);
                }
            } else {
                for (long i = 0; i < inner; ++i) {
                    o[i] = (float)tmlr_host_clamp(zp + tmlr_requantize((int32_t)s[i] + b, m, sh), lo, hi);
                }
            }
        }
    }
}
