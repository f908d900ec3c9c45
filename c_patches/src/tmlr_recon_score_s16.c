/* Reconstruction anomaly score; Python twin: repair.fixedpoint_anomaly.recon_score_s16. */
#include "tmlr.h"

#define TMLR_RECON_MAX_SIZE 32768
#define TMLR_RECON_MAX_MULT (1L << 30)

tmlr_status tmlr_recon_score_s16(const int8_t *input, const int8_t *output, int32_t size, int32_t in_zp,
                                 int32_t out_zp, int32_t mult_ee, int32_t mult_ef, int32_t mult_ff, int32_t shift,
                                 int16_t *score)
{
    int64_t sum_ee = 0;
    int64_t sum_ef = 0;
    int64_t sum_ff = 0;
    int64_t acc;
    int32_t i;
    if (input == NULL || output == NULL || score == NULL || size < 1 || size > TMLR_RECON_MAX_SIZE ||
        in_zp < -128 || in_zp > 127 || out_zp < -128 || out_zp > 127 || mult_ee < 0 ||
        mult_ee > TMLR_RECON_MAX_MULT || mult_ef < 0 || mult_ef > TMLR_RECON_MAX_MULT || mult_ff < 0 ||
        mult_ff > TMLR_RECON_MAX_MULT || shift < 0 || shift > 62) {
        return TMLR_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const int32_t e = (int32_t)input[i] - in_zp;   /* |e| <= 255 */
        const int32_t f = (int32_t)output[i] - out_zp; /* |f| <= 255 */
        sum_ee += e * e;
        sum_ef += e * f;
        sum_ff += f * f;
    }
    /* each |sum| < 32768 * 255^2 < 2^31, each product <= 2^30 (2^31 - 1), their magnitudes' sum < 2^63 */
    acc = sum_ee * mult_ee - sum_ef * mult_ef + sum_ff * mult_ff;
    if (acc < 0) {
        acc = 0;
    }
    if (shift > 0) {
        acc = ((acc >> (shift - 1)) + 1) >> 1; /* round half up; never adds 2^(shift-1) to a sum near 2^63 */
    }
    *score = (int16_t)(acc > 32767 ? 32767 : acc);
    return TMLR_OK;
}
