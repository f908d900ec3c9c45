/*
 * tmlrepair C shims: fixed-point corrections applied after an int8 model on a microcontroller.
 *
 * C99, no malloc, no floating point, nothing from libc beyond stdint.h, stddef.h and string.h.
 * Buffers are the caller's. Every function returns a tmlr_status. Each has a bit-exact Python
 * twin in repair/fixedpoint.py; the tests compile this library and compare on thousands of vectors.
 *
 * Requires arithmetic right shift of negative integers (every GCC/Clang/ARM target does; checked below).
 */
#ifndef TMLR_H
#define TMLR_H

#include <stddef.h>
#include <stdint.h>

#define TMLR_VERSION_MAJOR 0
#define TMLR_VERSION_MINOR 1
#define TMLR_VERSION_PATCH 0
#define TMLR_VERSION ((TMLR_VERSION_MAJOR * 10000) + (TMLR_VERSION_MINOR * 100) + TMLR_VERSION_PATCH)

#if (-1 >> 1) != -1
#error "tmlrepair shims need arithmetic right shift of negative integers"
#endif

typedef enum {
    TMLR_OK = 0,
    TMLR_ERR_ARG = 1,    /* a NULL pointer, a zero size, or a parameter outside its documented range */
    TMLR_ERR_RANGE = 2   /* a size that would overflow the documented int32/int64 accumulators */
} tmlr_status;

/* ---------------------------------------------------------------- softmax (TFLM / CMSIS-NN arithmetic) */

/*
 * int8 logits -> int8 probabilities (scale 1/256, zero point -128), row by row; the same integers as
 * TFLite Micro's reference int8 Softmax and CMSIS-NN arm_softmax_s8.
 *
 * mult      Q0.31 multiplier of beta * input_scale * 2^26 (with a temperature T: beta / T): TFLM gives
 *           [2^30, 2^31); accepted: [0, 2^31 - 1].
 * shift     its left shift, in [0, 30] (TFLM: input_left_shift).
 * diff_min  -floor(31 * 2^26 / 2^shift) from TFLM: inputs below max + diff_min give probability 0 (output -128).
 *           Accepted: diff_min <= 0 with max(diff_min, -255) * 2^shift >= -2^31, so that every scaled
 *           difference fits in int32 (TFLM's value always does); else TMLR_ERR_ARG.
 * Rounding: exp in Q0.31 by gemmlowp's polynomial; sum in Q12.19; reciprocal by Newton-Raphson;
 *           output rounded half away from zero, saturated to [-128, 127].
 * row_size  1 .. 4095 (the Q12.19 sum of up to 4095 terms of at most 2^19 fits in int32); else TMLR_ERR_RANGE.
 */
tmlr_status tmlr_softmax_s8(const int8_t *input, int32_t num_rows, int32_t row_size, int32_t mult, int32_t shift,
                            int32_t diff_min, int8_t *output);

/* As tmlr_softmax_s8, int16 output (scale 1/65536, zero point -32768), as CMSIS-NN arm_softmax_s8_s16. */
tmlr_status tmlr_softmax_s8_s16(const int8_t *input, int32_t num_rows, int32_t row_size, int32_t mult,
                                int32_t shift, int32_t diff_min, int16_t *output);

/* ---------------------------------------------------------------- per-class affine (vector scaling) */

/*
 * y_k = clamp(requantize(x_k - in_zp, mult[k], shift[k]) + offset[k] + out_zp, -128, 127), k < num_classes,
 * for each of num_rows rows. requantize(v, M, s) = RDBP(SRDHM(v * 2^max(s,0), M), max(-s,0)), CMSIS-NN's
 * arm_nn_requantize: SRDHM rounds ties toward +inf, RDBP (rounding divide by power of two) away from zero.
 * mult[k]   Q0.31 multiplier of |a_k| * s_in / s_out, sign of a_k; |mult| < 2^31 (INT32_MIN refused).
 * shift[k]  in [-31, 23] (|x - in_zp| <= 255, so x * 2^shift stays below 2^31); offset[k] = round(b_k / s_out),
 *           in [-2^24, 2^24]; in_zp, out_zp in [-128, 127]. The sum is formed in int64, then saturated.
 *           Any parameter outside these ranges: TMLR_ERR_ARG, nothing written.
 */
tmlr_status tmlr_class_affine_s8(const int8_t *input, int32_t num_rows, int32_t num_classes, int32_t in_zp,
                                 const int32_t *mult, const int32_t *shift, const int32_t *offset, int32_t out_zp,
                                 int8_t *output);

/* ---------------------------------------------------------------- the input pre-shim */

/*
 * Integer sensor readings -> the model's int8 input, one scale and offset per feature (the pre-shim of
 * `tmlrepair fit`, repairs/in_model/input_scaling.py): for row r and feature j,
 * q = clamp(zero_point + requantize(raw[j] + offset[j], mult[j], shift[j]), -128, 127).
 * |mult| < 2^31, shift in [-31, 5], |offset| <= 2^24, zero_point in [-128, 127]: (raw + offset) * 2^shift stays
 * below 2^31, no saturation inside. TMLR_ERR_ARG before touching the output otherwise.
 */
tmlr_status tmlr_input_pre_shim_s16(const int16_t *raw, int32_t num_rows, int32_t num_features, const int32_t *mult,
                                    const int32_t *shift, const int32_t *offset, int32_t zero_point, int8_t *output);

/* ---------------------------------------------------------------- decisions */

/*
 * decision = the class whose score reaches its threshold with the highest score (lowest index on ties),
 * or -1 if none. scores and thresholds are int8 probabilities (q = 256 p - 128): threshold_q = ceil(256 theta) - 128.
 */
tmlr_status tmlr_threshold_decide_s8(const int8_t *scores, int32_t num_classes, const int8_t *thresholds,
                                     int32_t *decision);

/*
 * Sliding-window anomaly boundary over int16 values: alarm at x_t iff |x_t - mean| > alpha * std over the
 * window of the previous `window` values, exactly: (N x - S)^2 * 2^F > A (N Q - S^2), alpha^2 = A / 2^F,
 * with S = sum x and Q = sum x^2 kept in int64 over a caller-provided ring buffer. No division, no sqrt.
 * window    2 .. 1024;  alpha2_q (A) in [0, 4095];  frac_bits (F) in [0, 8]. With |x| <= 2^15 these bounds
 *           keep (N x - S)^2 2^F <= 2^60 and A (N Q - S^2) < 2^62: no overflow, no 64-bit division.
 * The first `window` values never alarm (the window is not full yet).
 */
typedef struct {
    int16_t *ring;      /* caller's buffer of `window` values */
    int32_t window;
    int32_t head;       /* next slot to overwrite */
    int32_t count;      /* values seen, saturating at window */
    int64_t sum;        /* S over the ring */
    int64_t sum_sq;     /* Q over the ring */
    int32_t alpha2_q;
    int32_t frac_bits;
} tmlr_window_s16;

tmlr_status tmlr_window_init_s16(tmlr_window_s16 *w, int16_t *ring, int32_t window, int32_t alpha2_q,
                                 int32_t frac_bits);
tmlr_status tmlr_window_step_s16(tmlr_window_s16 *w, int16_t x, uint8_t *alarm);

/*
 * Anomaly score of an autoencoder: the mean squared reconstruction error of its int8 input by its int8 output,
 * in int16 units of a score scale s (Python twin: repair.fixedpoint_anomaly.recon_score_s16):
 *   e = input - in_zp, f = output - out_zp, E = sum e^2, C = sum e f, F = sum f^2 (exact, < 2^31);
 *   score = min(round_half_up(max(mult_ee E - mult_ef C + mult_ff F, 0) / 2^shift), 32767),
 * with mult_ee = s_in^2 / (n s) 2^shift, mult_ef = 2 s_in s_out / (n s) 2^shift, mult_ff = s_out^2 / (n s) 2^shift.
 * size      1 .. 32768;  in_zp, out_zp in [-128, 127];  multipliers in [0, 2^30];  shift in [0, 62].
 *           With these bounds every int64 product and the sum stay below 2^63: no overflow.
 */
tmlr_status tmlr_recon_score_s16(const int8_t *input, const int8_t *output, int32_t size, int32_t in_zp,
                                 int32_t out_zp, int32_t mult_ee, int32_t mult_ef, int32_t mult_ff, int32_t shift,
                                 int16_t *score);

/* ---------------------------------------------------------------- keyword stream */

/*
 * TensorFlow Lite Micro micro_speech's RecognizeCommands, in integers, with its state in the caller's buffers
 * (Python twin: repair.fixedpoint.recognize_commands). Per step (int8 posteriors of num_classes, time in ms):
 * results older than time - window_ms leave the window; with fewer than min_count results, or a span under
 * window_ms / 4, no decision (label -1, score 0); else avg_k = sum (score_k + 128) / count (C division), the top
 * label is the first highest average above 0 (label 0 if none), and a new command fires when avg_top > threshold
 * and the label differs from the last fired one or more than suppression_ms passed since it (never suppressed
 * after silence_class; -1: no silence class).
 * capacity  results the ring holds: at least every result of one window (window_ms / step_ms + 1); a step that
 *           would overflow it returns TMLR_ERR_RANGE and changes nothing.
 * num_classes 1 .. 256; window_ms 1 .. 2^30; threshold 0 .. 255; suppression_ms 0 .. 2^30; min_count 1 .. capacity;
 * silence_class -1 .. num_classes - 1. Times must not decrease (TMLR_ERR_ARG, nothing changed).
 */
typedef struct {
    int8_t *scores;      /* caller's ring: capacity x num_classes */
    int32_t *times;      /* caller's ring: capacity */
    int32_t capacity, num_classes, head, count;
    int32_t window_ms, threshold, suppression_ms, min_count, silence_class;
    int32_t last_label;  /* the last fired label (silence_class before any) */
    int32_t last_time;
    uint8_t fired_once;  /* last_time is set */
} tmlr_recognizer_s8;

tmlr_status tmlr_recognizer_init_s8(tmlr_recognizer_s8 *r, int8_t *score_ring, int32_t *time_ring, int32_t capacity,
                                    int32_t num_classes, int32_t window_ms, int32_t threshold, int32_t suppression_ms,
                                    int32_t min_count, int32_t silence_class);
tmlr_status tmlr_recognizer_step_s8(tmlr_recognizer_s8 *r, const int8_t *scores, int32_t time_ms, int32_t *label,
                                    int32_t *score, uint8_t *is_new_command);

#endif /* TMLR_H */
