/*
 * Host build only (never on the device): the squared error an int8 quantizer leaves on a sample of float values, for
 * a whole curve of quantizers in one call — activation thresholds' MSE search (repair/repairs/in_model/thresholds.py
 * holds the equation and the numpy form, which this equals element for element; only the order of the sum differs).
 * repair/program/host.py builds it with the program's requantization.
 */
#include <math.h>
#include <stdint.h>

/*
 * v: n values. For each quantizer i of `ranges` (scale scales[i], zero point zps[i]):
 * Q(v) = clamp(rint(v / s), -128 - z, 127 - z) * s in double (rint: round half to even, the default rounding mode,
 * as numpy's), and sse[i] = Σ (v - Q(v))² (one vectorized loop: its sum reassociated across lanes).
 */
void tmlr_host_quant_sse(const double *v, long n, const double *scales, const int32_t *zps, long ranges, double *sse)
{
    for (long i = 0; i < ranges; ++i) {
        const double s = scales[i], lo = (double)(-128 - zps[i]), hi = (double)(127 - zps[i]);
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (long j = 0; j < n; ++j) {
            double q = rint(v[j] / s);
            q = q < lo ? lo : (q > hi ? hi : q);
            const double d = v[j] - q * s;
            acc += d * d;
        }
        sse[i] = acc;
    }
}
