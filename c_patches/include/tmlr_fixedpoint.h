/*
 * Fixed-point primitives shared by the shims (gemmlowp, as TFLite Micro and CMSIS-NN use them).
 * Python twins: repair/fixedpoint.py (same names without the tmlr_ prefix).
 * Written without undefined behaviour: no left shift of negative values, no signed overflow.
 */
#ifndef TMLR_FIXEDPOINT_H
#define TMLR_FIXEDPOINT_H

#include <stdint.h>

#define TMLR_Q31_MAX ((int32_t)0x7FFFFFFF)
#define TMLR_Q31_MIN ((int32_t)(-0x7FFFFFFF - 1))

/* floor(a*b / 2^31 + 1/2) (ties toward +inf, as VQRDMULH); saturates a = b = INT32_MIN to INT32_MAX. */
static inline int32_t tmlr_mul_sat_q31(int32_t a, int32_t b)
{
    if (a == TMLR_Q31_MIN && b == TMLR_Q31_MIN) {
        return TMLR_Q31_MAX;
    }
    const int64_t nudge = ((a < 0) != (b < 0)) ? (1 - ((int64_t)1 << 30)) : ((int64_t)1 << 30);
    const int64_t m = (int64_t)a * (int64_t)b + nudge;
    return (int32_t)(m / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

/* round(x / 2^e), ties away from zero; e >= 0. For e >= 32, |x| / 2^e < 1/2 rounds to 0 (the softmax reaches
 * e = 32..35 when over 511 inputs share the row maximum: gemmlowp's shift would be undefined there). */
static inline int32_t tmlr_div_pot_q31(int32_t x, int32_t e)
{
    if (e > 31) {
        return 0;
    }
    const int32_t mask = (int32_t)((((uint32_t)1) << e) - 1u);
    const int32_t remainder = x & mask;
    int32_t result = x >> e;
    const int32_t threshold = (mask >> 1) + (result < 0 ? 1 : 0);
    if (remainder > threshold) {
        result += 1;
    }
    return result;
}

/* x * 2^e saturated to int32, e in [0, 30]. */
static inline int32_t tmlr_shl_sat_q31(int32_t x, int32_t e)
{
    const int64_t v = (int64_t)x * ((int64_t)1 << e);
    if (v > TMLR_Q31_MAX) {
        return TMLR_Q31_MAX;
    }
    if (v < TMLR_Q31_MIN) {
        return TMLR_Q31_MIN;
    }
    return (int32_t)v;
}

/* CMSIS-NN arm_nn_requantize: RDBP(SRDHM(x * 2^max(s,0), M), max(-s,0)), shift in [-31, 30].
 * CMSIS-NN leaves x * 2^s to overflow; here it saturates to int32 (the Python twin does the same), so every
 * input is defined. Callers keep |x| * 2^max(s,0) < 2^31, where the two agree. */
static inline int32_t tmlr_requantize(int32_t x, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift < 0 ? -shift : 0;
    return tmlr_div_pot_q31(tmlr_mul_sat_q31(tmlr_shl_sat_q31(x, left), mult), right);
}

/* The constant tmlr_requantize_right adds for a right shift r in [1, 31]: 2^30 + 2^(r-1) 2^31. */
static inline int64_t tmlr_requant_nudge(int32_t right)
{
    return ((int64_t)1 << 30) + ((int64_t)1 << (30 + right));
}

/* tmlr_requantize(acc, M, -r) for M > 0 and r in [1, 31] (the kernels' common case), in one multiply-add and one
 * shift; nudge = tmlr_requant_nudge(r). The doubling high multiply is h = floor((acc M + 2^30) / 2^31) for either sign
 * (gemmlowp's nudge with C's truncating division; M > 0: no saturation); the rounding divide, ties away from zero,
 * is floor((h + 2^(r-1) - [h < 0]) / 2^r); and floor((floor(a / b) + n) / d) = floor((a + n b) / (b d)) for integers
 * (b, d > 0). So the result is floor((acc M + nudge - [acc < 0] 2^31) / 2^(31+r)): [h < 0] may be read as [acc < 0],
 * since acc < 0 with h = 0 gives 0 either way. |acc M| < 2^62 and nudge < 2^62, so the sum fits int64, and as
 * 31 + r >= 32 the quotient is its high word shifted right by r - 1 (arithmetic right shifts of negative values:
 * implementation-defined in C99, a floor on GCC and Clang, as the kernels' other shifts assume). */
static inline int32_t tmlr_requantize_right(int32_t acc, int32_t mult, int32_t right, int64_t nudge)
{
    const int64_t sum = (int64_t)acc * (int64_t)mult + (acc < 0 ? nudge - ((int64_t)1 << 31) : nudge);
    return (int32_t)(sum >> 32) >> (right - 1);
}

/* e^(a / 2^26) for a <= 0 (Q5.26), as Q0.31 (gemmlowp exp_on_negative_values, 5 integer bits). */
static inline int32_t tmlr_exp_on_negative_values(int32_t a)
{
    static const int32_t k_mult[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t val_mod_minus_quarter = (a & ((1 << 24) - 1)) - (1 << 24);
    const int32_t remainder = val_mod_minus_quarter - a;
    const int32_t x = val_mod_minus_quarter * 32 + (1 << 28); /* "<< 5" without shifting a negative value */
    const int32_t x2 = tmlr_mul_sat_q31(x, x);
    const int32_t x3 = tmlr_mul_sat_q31(x2, x);
    const int32_t x4_over_4 = tmlr_div_pot_q31(tmlr_mul_sat_q31(x2, x2), 2);
    const int32_t poly = tmlr_div_pot_q31(tmlr_mul_sat_q31(x4_over_4 + x3, 715827883) + x2, 1);
    int32_t result = 1895147668 + tmlr_mul_sat_q31(1895147668, x + poly);
    int k;
    if (a == 0) {
        return TMLR_Q31_MAX;
    }
    for (k = 0; k < 7; ++k) {
        if ((remainder & (1 << (24 + k))) != 0) {
            result = tmlr_mul_sat_q31(result, k_mult[k]);
        }
    }
    return result;
}

/* 1 / (1 + x) for x in [0, 1), both Q0.31 (gemmlowp one_over_one_plus_x_for_x_in_0_1). */
static inline int32_t tmlr_one_over_one_plus_x(int32_t x)
{
    const int64_t s = (int64_t)x + (int64_t)TMLR_Q31_MAX;
    const int32_t half_denominator = (int32_t)((s + 1) / 2);
    int32_t r = 1515870810 + tmlr_mul_sat_q31(half_denominator, -1010580540);
    const int32_t one_q29 = 1 << 29;
    int i;
    for (i = 0; i < 3; ++i) {
        r += tmlr_shl_sat_q31(tmlr_mul_sat_q31(r, one_q29 - tmlr_mul_sat_q31(half_denominator, r)), 2);
    }
    return tmlr_shl_sat_q31(r, 1);
}

/* Leading zeros of a nonzero uint32. */
static inline int32_t tmlr_clz_u32(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return (int32_t)__builtin_clz(x);
#else
    int32_t n = 0;
    while ((x & 0x80000000u) == 0u) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

#endif /* TMLR_FIXEDPOINT_H */
