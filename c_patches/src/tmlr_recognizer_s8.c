/* Keyword stream recognizer (TFLM RecognizeCommands); Python twin: repair.fixedpoint.recognize_commands. */
#include <string.h>

#include "tmlr.h"

#define TMLR_RECOGNIZER_MAX_CLASSES 256
#define TMLR_RECOGNIZER_MAX_MS (1L << 30)

tmlr_status tmlr_recognizer_init_s8(tmlr_recognizer_s8 *r, int8_t *score_ring, int32_t *time_ring, int32_t capacity,
                                    int32_t num_classes, int32_t window_ms, int32_t threshold, int32_t suppression_ms,
                                    int32_t min_count, int32_t silence_class)
{
    if (r == NULL || score_ring == NULL || time_ring == NULL || capacity < 1 || num_classes < 1 ||
        num_classes > TMLR_RECOGNIZER_MAX_CLASSES || window_ms < 1 || window_ms > TMLR_RECOGNIZER_MAX_MS ||
        threshold < 0 || threshold > 255 || suppression_ms < 0 || suppression_ms > TMLR_RECOGNIZER_MAX_MS ||
        min_count < 1 || min_count > capacity || silence_class < -1 || silence_class >= num_classes) {
        return TMLR_ERR_ARG;
    }
    r->scores = score_ring;
    r->times = time_ring;
    r->capacity = capacity;
    r->num_classes = num_classes;
    r->head = 0;
    r->count = 0;
    r->window_ms = window_ms;
    r->threshold = threshold;
    r->suppression_ms = suppression_ms;
    r->min_count = min_count;
    r->silence_class = silence_class;
    r->last_label = silence_class;
    r->last_time = 0;
    r->fired_once = 0;
    return TMLR_OK;
}

tmlr_status tmlr_recognizer_step_s8(tmlr_recognizer_s8 *r, const int8_t *scores, int32_t time_ms, int32_t *label,
                                    int32_t *score, uint8_t *is_new_command)
{
    int32_t sums[TMLR_RECOGNIZER_MAX_CLASSES];
    int32_t i;
    int32_t k;
    int32_t top = 0;
    int32_t top_score = 0;
    int32_t oldest;
    if (r == NULL || scores == NULL || label == NULL || score == NULL || is_new_command == NULL) {
        return TMLR_ERR_ARG;
    }
    if (r->count > 0 && time_ms < r->times[(r->head + r->count - 1) % r->capacity]) {
        return TMLR_ERR_ARG; /* time went backwards */
    }
    /* prune results older than the window (time < time_ms - window_ms), then add this one */
    while (r->count > 0 && (int64_t)r->times[r->head] < (int64_t)time_ms - r->window_ms) {
        r->head = (r->head + 1) % r->capacity;
        r->count--;
    }
    if (r->count == r->capacity) {
        return TMLR_ERR_RANGE; /* the ring is smaller than one window; pruning changed nothing a caller sees */
    }
    {
        const int32_t slot = (r->head + r->count) % r->capacity;
        memcpy(&r->scores[(size_t)slot * (size_t)r->num_classes], scores, (size_t)r->num_classes);
        r->times[slot] = time_ms;
        r->count++;
    }
    *label = -1;
    *score = 0;
    *is_new_command = 0;
    oldest = r->times[r->head];
    if (r->count < r->min_count || (int64_t)time_ms - oldest < r->window_ms / 4) {
        return TMLR_OK;
    }
    for (k = 0; k < r->num_classes; ++k) {
        sums[k] = 0;
    }
    for (i = 0; i < r->count; ++i) {
        const int8_t *row = &r->scores[(size_t)((r->head + i) % r->capacity) * (size_t)r->num_classes];
        for (k = 0; k < r->num_classes; ++k) {
            sums[k] += (int32_t)row[k] + 128; /* count * 255 < 2^31 */
        }
    }
    for (k = 0; k < r->num_classes; ++k) {
        const int32_t avg = sums[k] / r->count;
        if (avg > top_score) {
            top_score = avg;
            top = k;
        }
    }
    *label = top;
    *score = top_score;
    if (top_score > r->threshold) {
        const int suppressed = r->last_label != r->silence_class && r->fired_once && top == r->last_label &&
                               (int64_t)time_ms - r->last_time <= r->suppression_ms;
        if (!suppressed) {
            r->last_label = top;
            r->last_time = time_ms;
            r->fired_once = 1;
            *is_new_command = 1;
        }
    }
    return TMLR_OK;
}
