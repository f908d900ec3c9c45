/* Per-class affine correction of int8 logits; Python twin: repair.fixedpoint.class_scale_offset_s8. */
#include "tmlr.h"
#include "tmlr_fixedpoint.h"

tmlr_status tmlr_class_affine_s8(const int8_t *input, int32_t num_rows, int32_t num_classes, int32_t in_zp,
                                 const int32_t *mult, const int32_t *shift, const int32_t *offset, int32_t out_zp,
                                 int8_t *output)
{
    int32_t row;
    int32_t k;
    if (input == NULL || mult == NULL || shift == NULL || offset == NULL || output == NULL || num_rows < 0 ||
        num_classes < 1 || in_zp < -128 || in_zp > 127 || out_zp < -128 || out_zp > 127) {
        return TMLR_ERR_ARG;
    }
    for (k = 0; k < num_classes; ++k) {
        /* |x - in_zp| <= 255 and 255 * 2^23 < 2^31: the left shift of arm_nn_requantize never saturates */
        if (shift[k] < -31 || shift[k] > 23 || mult[k] == TMLR_Q31_MIN || offset[k] < -(1 << 24) ||
            offset[k] > (1 << 24)) {
            return TMLR_ERR_ARG;
        }
    }
    for (row = 0; row < num_rows; ++row) {
        for (k = 0; k < num_classes; ++k) {
            const size_t i = (size_t)row * (size_t)num_classes + (size_t)k;
            /* |requantized| < 2^31 plus |offset| <= 2^24 plus |out_zp| <= 128: summed in int64, no overflow */
            int64_t y = (int64_t)tmlr_requantize((int32_t)input[i] - in_zp, mult[k], shift[k]) + offset[k] + out_zp;
            y = y < -128 ? -128 : (y > 127 ? 127 : y);
            output[i] = (int8_t)y;
        }
    }
    return TMLR_OK;
}
