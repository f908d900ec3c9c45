/* Per-class threshold decision on int8 probabilities; Python twin: repair.fixedpoint.threshold_decide. */
#include "tmlr.h"

tmlr_status tmlr_threshold_decide_s8(const int8_t *scores, int32_t num_classes, const int8_t *thresholds,
                                     int32_t *decision)
{
    int32_t k;
    int32_t best = -1;
    if (scores == NULL || thresholds == NULL || decision == NULL || num_classes < 1) {
        return TMLR_ERR_ARG;
    }
    for (k = 0; k < num_classes; ++k) {
        if (scores[k] >= thresholds[k] && (best < 0 || scores[k] > scores[best])) {
            best = k;
        }
    }
    *decision = best;
    return TMLR_OK;
}
