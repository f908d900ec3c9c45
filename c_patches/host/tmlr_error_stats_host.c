/*
 * Host build only (never on the device): one pass of drift's error statistics over a float/int8 tensor pair, where
 * numpy needs about a dozen (repair/drift/stats.py holds the equations and the numpy form, which this equals up to
 * the order and precision of its sums). repair/program/host.py builds it with the program's requantization.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* totals, in this order (the caller's running values, updated): */
enum { TMLR_FF, TMLR_FQ, TMLR_DD, TMLR_ABS_SUM, TMLR_MAX_ABS, TMLR_F_MIN, TMLR_F_MAX, TMLR_SATURATED, TMLR_TOTALS };

/* One run of a sample's row: the loop of tmlr_host_error_stats over integers held as float32 (the integer
 * program's own values, or int8 widened by the caller), with each element's channel factor (factors) or none (NULL:
 * all 1, the common case, which skips a load and a multiply per element). Inlined twice with factors' nullness
 * known, so each loop is compiled, and vectorized, for its case. */
static inline __attribute__((always_inline)) void row_stats(const float *restrict fn, const float *restrict kc,
                                                            long row, float scale, float z,
                                                            const float *restrict factors, float sat_lo, float sat_hi,
                                                            double *restrict totals, float *restrict row_sums)
{
    float ff = 0.0f, fq = 0.0f, dd = 0.0f, ad = 0.0f, sat = 0.0f;
    float max_abs = 0.0f, f_min = INFINITY, f_max = -INFINITY;
#pragma omp simd reduction(+ : ff, fq, dd, ad, sat) reduction(max : max_abs, f_max) reduction(min : f_min)
    for (long j = 0; j < row; ++j) {
        const float kv = kc[j];
        const float q0 = (kv - z) * scale;
        const float q = factors != NULL ? q0 * factors[j] : q0;
        const float fv = fn[j];
        const float d = fv - q;
        const float a = fabsf(d);
        ff += fv * fv;
        fq += fv * q;
        dd += d * d;
        ad += a;
        sat += (float)((kv == sat_lo) + (kv == sat_hi));
        row_sums[j] += d;
        max_abs = a > max_abs ? a : max_abs;
        f_min = fv < f_min ? fv : f_min;
        f_max = fv > f_max ? fv : f_max;
    }
    totals[TMLR_FF] += ff;
    totals[TMLR_FQ] += fq;
    totals[TMLR_DD] += dd;
    totals[TMLR_ABS_SUM] += ad;
    totals[TMLR_SATURATED] += sat;
    totals[TMLR_MAX_ABS] = max_abs > totals[TMLR_MAX_ABS] ? max_abs : totals[TMLR_MAX_ABS];
    totals[TMLR_F_MIN] = f_min < totals[TMLR_F_MIN] ? f_min : totals[TMLR_F_MIN];
    totals[TMLR_F_MAX] = f_max > totals[TMLR_F_MAX] ? f_max : totals[TMLR_F_MAX];
}

/* int8 integers are widened to float32 a chunk at a time (8 KB, beside the chunk of f in L1) and folded by the float
 * loop: one loop over int8 and float32 at once vectorized badly (gcc 12, AVX-512: 64 lanes, its eight reductions
 * four times over, spilled to the stack; 0.36 against 0.24 ns an element from cache). */
enum { TMLR_WIDEN_CHUNK = 2048 };

static void widen(const int8_t *restrict k, long count, float *restrict out)
{
    for (long j = 0; j < count; ++j) {
        out[j] = (float)k[j];
    }
}

/*
 * f float32 and k int8 (or, k_codes nonzero, float32 holding integers) of one shape, contiguous, as `outer` samples
 * of `row` elements each: with q = ((k - zp) * scale) * row_factors[j] in float32 (as numpy computes it;
 * row_factors: element j's channel factor, or NULL: all 1) and d = f - q, adds Σf², Σfq, Σd², Σ|d|, the count of k
 * at sat_lo or sat_hi (one outside int8 for none) and max |d|, min f, max f into totals[TMLR_TOTALS], and d into
 * row_sums[j] (the caller sums those per channel). One vectorized loop over each sample's row (int8: over each chunk
 * of it, widened first; omp simd: the reductions in float lanes, reassociated only there), its sums then added in
 * double: no per-channel reduction, so short channels cost nothing extra.
 */
void tmlr_host_error_stats(const float *f, const void *k, int32_t k_codes, long outer, long row, float scale,
                           int32_t zp, const float *row_factors, int32_t sat_lo, int32_t sat_hi, double *totals,
                           float *row_sums)
{
    const float z = (float)zp, lo = (float)sat_lo, hi = (float)sat_hi;
    float widened[TMLR_WIDEN_CHUNK];
    for (long n = 0; n < outer; ++n) {
        const float *fn = f + n * row;
        if (k_codes) {
            const float *kn = (const float *)k + n * row;
            if (row_factors != NULL) {
                row_stats(fn, kn, row, scale, z, row_factors, lo, hi, totals, row_sums);
            } else {
                row_stats(fn, kn, row, scale, z, NULL, lo, hi, totals, row_sums);
            }
            continue;
        }
        for (long j = 0; j < row; j += TMLR_WIDEN_CHUNK) {
            const long count = row - j < TMLR_WIDEN_CHUNK ? row - j : TMLR_WIDEN_CHUNK;
            widen((const int8_t *)k + n * row + j, count, widened);
            if (row_factors != NULL) {
                row_stats(fn + j, widened, count, scale, z, row_factors + j, lo, hi, totals, row_sums + j);
            } else {
                row_stats(fn + j, widened, count, scale, z, NULL, lo, hi, totals, row_sums + j);
            }
        }
    }
}
