/*
 * Host build only (never on the device): the per-bin sums of a bootstrap of the expected calibration error, for
 * several models over the same resamples (repair/metrics.py holds the equation and the numpy form, which this equals
 * up to the order of its sums). repair/program/host.py builds it with the program's requantization.
 */
#include <stdint.h>

/*
 * draws: n_boot resamples of n sample indices each (in [0, n)); bins and gaps: per model k < n_models, each sample's
 * confidence bin (in [0, n_bins)) and its gap correct - confidence. Adds, in the order drawn, the gap of every drawn
 * sample into sums[k][b][its bin] (double): a sample drawn c times counts c times. One gather per draw from two
 * arrays of n values, which stay in cache, where the numpy form builds the n_boot x n matrix of draw counts and reads
 * it once per bin.
 */
void tmlr_host_bootstrap_bin_sums(const int32_t *draws, long n_boot, long n, long n_models, const int32_t *bins,
                                  const double *gaps, long n_bins, double *sums)
{
    for (long k = 0; k < n_models; ++k) {
        const int32_t *bin = bins + k * n;
        const double *gap = gaps + k * n;
        for (long b = 0; b < n_boot; ++b) {
            const int32_t *drawn = draws + b * n;
            double *s = sums + (k * n_boot + b) * n_bins;
            for (long j = 0; j < n; ++j) {
                const int32_t i = drawn[j];
                s[bin[i]] += gap[i];
            }
        }
    }
}
