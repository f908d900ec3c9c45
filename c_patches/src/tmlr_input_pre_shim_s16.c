/* The input pre-shim: integer sensor readings -> int8 model input; Python twin: repair.fixedpoint.input_pre_shim_s8. */
#include "tmlr.h"
#include "tmlr_fixedpoint.h"

tmlr_status tmlr_input_pre_shim_s16(const int16_t *raw, int32_t num_rows, int32_t num_features, const int32_t *mult,
                                    const int32_t *shift, const int32_t *offset, int32_t zero_point, int8_t *output)
{
    int32_t row;
    int32_t j;
    if (raw == NULL || mult == NULL || shift == NULL || offset == NULL || output == NULL || num_rows < 0 ||
        num_features < 1 || zero_point < -128 || zero_point > 127) {
        return TMLR_ERR_ARG;
    }
    for (j = 0; j < num_features; ++j) {
        if (shift[j] < -31 || shift[j] > 5 || mult[j] == TMLR_Q31_MIN || offset[j] < -(1 << 24) ||
            offset[j] > (1 << 24)) {
            return TMLR_ERR_ARG;
        }
    }
    for (row = 0; row < num_rows; ++row) {
        for (j = 0; j < num_features; ++j) {
            const size_t i = (size_t)row * (size_t)num_features + (size_t)j;
            /* |raw + offset| < 2^15 + 2^24: int32; the requantized value < 2^31, plus zero_point summed in int64 */
            int64_t q = (int64_t)tmlr_requantize((int32_t)raw[i] + offset[j], mult[j], shift[j]) + zero_point;
            q = q < -128 ? -128 : (q > 127 ? 127 : q);
            output[i] = (int8_t)q;
        }
    }
    return TMLR_OK;
}
