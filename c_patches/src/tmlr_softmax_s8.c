/* int8 softmax with TFLite Micro / CMSIS-NN arithmetic; Python twin: repair.fixedpoint.softmax_s8. */
#include "tmlr.h"
#include "tmlr_fixedpoint.h"

#define TMLR_ACCUM_BITS 12
/* Each exp term is at most 2^19 in Q12.19 (exp(0) = 2^31 - 1, rounded by 2^12): 4095 of them fit in int32,
 * 4096 equal inputs would overflow the sum (TFLM's reference kernel has the same bound). */
#define TMLR_MAX_ROW 4095

static tmlr_status softmax_rows(const int8_t *input, int32_t num_rows, int32_t row_size, int32_t mult,
                                int32_t shift, int32_t diff_min, int32_t out_bits, int8_t *out8, int16_t *out16)
{
    const int32_t lo = out_bits == 8 ? -128 : -32768;
    const int32_t hi = out_bits == 8 ? 127 : 32767;
    int32_t row;
    if (input == NULL || (out8 == NULL && out16 == NULL) || num_rows < 0 || row_size < 1 || shift < 0 ||
        shift > 30 || mult < 0 || diff_min > 0) {
        return TMLR_ERR_ARG;
    }
    /* diff * 2^shift must fit in int32 for every diff the kernel scales: diff >= max(diff_min, -255) */
    if ((int64_t)(diff_min > -255 ? diff_min : -255) * ((int64_t)1 << shift) < (int64_t)TMLR_Q31_MIN) {
        return TMLR_ERR_ARG;
    }
    if (row_size > TMLR_MAX_ROW) {
        return TMLR_ERR_RANGE;
    }
    for (row = 0; row < num_rows; ++row) {
        const int8_t *in = input + (size_t)row * (size_t)row_size;
        int32_t max = in[0];
        int32_t sum = 0;
        int32_t col;
        for (col = 1; col < row_size; ++col) {
            if (in[col] > max) {
                max = in[col];
            }
        }
        for (col = 0; col < row_size; ++col) {
            const int32_t diff = (int32_t)in[col] - max;
            if (diff >= diff_min) {
                const int32_t e = tmlr_exp_on_negative_values(tmlr_mul_sat_q31((int32_t)((int64_t)diff * ((int64_t)1 << shift)), mult));
                sum += tmlr_div_pot_q31(e, TMLR_ACCUM_BITS);
            }
        }
        {
            const int32_t headroom = tmlr_clz_u32((uint32_t)sum);
            /* the bits below the leading one, as Q0.31: ((uint32)sum << headroom) - 2^31, no overflow */
            const int32_t x_shifted = (int32_t)(((uint32_t)sum << headroom) - 0x80000000u);
            const int32_t scale = tmlr_one_over_one_plus_x(x_shifted);
            const int32_t bits_over_unit = TMLR_ACCUM_BITS - headroom + (31 - out_bits);
            for (col = 0; col < row_size; ++col) {
                const int32_t diff = (int32_t)in[col] - max;
                int32_t res = lo;
                if (diff >= diff_min) {
                    const int32_t e = tmlr_exp_on_negative_values(tmlr_mul_sat_q31((int32_t)((int64_t)diff * ((int64_t)1 << shift)), mult));
                    res = tmlr_div_pot_q31(tmlr_mul_sat_q31(scale, e), bits_over_unit) + lo;
                    res = res < lo ? lo : (res > hi ? hi : res);
                }
                if (out_bits == 8) {
                    out8[(size_t)row * (size_t)row_size + (size_t)col] = (int8_t)res;
                } else {
                    out16[(size_t)row * (size_t)row_size + (size_t)col] = (int16_t)res;
                }
            }
        }
    }
    return TMLR_OK;
}

tmlr_status tmlr_softmax_s8(const int8_t *input, int32_t num_rows, int32_t row_size, int32_t mult, int32_t shift,
                            int32_t diff_min, int8_t *output)
{
    return softmax_rows(input, num_rows, row_size, mult, shift, diff_min, 8, output, NULL);
}

tmlr_status tmlr_softmax_s8_s16(const int8_t *input, int32_t num_rows, int32_t row_size, int32_t mult,
                                int32_t shift, int32_t diff_min, int16_t *output)
{
    return softmax_rows(input, num_rows, row_size, mult, shift, diff_min, 16, NULL, output);
}
