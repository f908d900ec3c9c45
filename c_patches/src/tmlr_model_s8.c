/* The reference device's int8 layers; Python twin: repair/program/ir.py. */
#include <string.h>

#include "tmlr_fixedpoint.h"
#include "tmlr_model.h"

#if defined(__ARM_FEATURE_SIMD32) && !defined(TMLR_PORTABLE_KERNELS)
#include <arm_acle.h> /* SXTB16, SMLAD: the Cortex-M4's two 16-bit MACs per instruction */
#endif

#ifdef TMLR_FAULT_SINGLE_ROUNDING
/* A deliberately faulty build (tests of `tmlrepair diagnose`): one rounding of acc·M / 2^(31−s), as kernels that
 * skip the doubling high multiply do, instead of TFLM's two. */
static int32_t faulty_requantize(int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t total = 31 - shift;
    const int64_t p = (int64_t)acc * (int64_t)mult;
    const int64_t half = (int64_t)1 << (total - 1);
    return (int32_t)(p >= 0 ? (p + half) >> total : -((-p + half) >> total));
}
#endif

#if defined(__GNUC__)
#define TMLR_HOT static inline __attribute__((always_inline))
#define TMLR_KERNEL static __attribute__((noinline)) /* its own registers: inlined into the layer switch, the loops spill */
#else
#define TMLR_HOT static inline
#define TMLR_KERNEL static
#endif

/* Thumb-2 (every Cortex-M3 and up): the common case of the requantization as `finish_run`'s and `channel_run`'s
 * instructions (the faulty builds below keep the C, which they change). */
#if defined(__thumb2__) && !defined(TMLR_FAULT_ACC16) && !defined(TMLR_FAULT_SINGLE_ROUNDING) && \
    !defined(TMLR_FAULT_OUTPUT_ZERO_POINT)
#define TMLR_RIGHT_RUN 1
#endif

/* One output channel's requantization, read from the layer once and kept in registers by the kernels (their int8
 * stores may alias the layer table, so the compiler would otherwise reload every field for every output). */
typedef struct {
    int32_t mult, shift, out_zp, act_min, act_max;
    int32_t right;  /* the common case, tmlr_requantize_right: M > 0 and a right shift r = -shift in [1, 31]; else 0 */
    int64_t nudge;  /* its tmlr_requant_nudge(r) (finish_run makes its own) */
} requant;

TMLR_HOT requant requant_of(const tmlr_layer *l, int32_t c)
{
    const int32_t i = l->per_channel ? c : 0;
    requant q = {l->mult[i], l->shift[i], l->out_zp, l->act_min, l->act_max, 0, 0};
#ifdef TMLR_FAULT_SHIFT_BY_ONE
    q.shift += 1; /* faulty build: the requantization's shift one too large (decoded off by one): output x2 */
#endif
#ifdef TMLR_FAULT_ACTIVATION_RANGE
    /* faulty build: a clamp at zero point + 48 (a ReLU6-style range where the model has a plain ReLU) */
    q.act_max = q.act_max < q.out_zp + 48 ? q.act_max : q.out_zp + 48;
#endif
    if (q.mult > 0 && q.shift <= -1 && q.shift >= -31) {
        q.right = -q.shift;
#ifndef TMLR_RIGHT_RUN
        q.nudge = tmlr_requant_nudge(q.right);
#endif
    }
    return q;
}

/* z_y + requantize(acc), clamped: TFLM's MultiplyByQuantizedMultiplier, then the activation range. */
TMLR_HOT int8_t finish_q(int32_t acc, const requant *q)
{
#ifdef TMLR_FAULT_ACC16
    /* faulty build: a 16-bit saturating accumulator, as a kernel that accumulates in int16 lanes */
    acc = acc > 32767 ? 32767 : (acc < -32768 ? -32768 : acc);
#endif
#ifdef TMLR_FAULT_SINGLE_ROUNDING
    int32_t y = faulty_requantize(acc, q->mult, q->shift) + q->out_zp;
#elif defined(TMLR_RIGHT_RUN)
    int32_t y = tmlr_requantize(acc, q->mult, q->shift) + q->out_zp; /* the rest: finish_run */
#else
    int32_t y = (q->right > 0 ? tmlr_requantize_right(acc, q->mult, q->right, q->nudge)
                              : tmlr_requantize(acc, q->mult, q->shift)) + q->out_zp;
#endif
#ifdef TMLR_FAULT_OUTPUT_ZERO_POINT
    y += 3; /* faulty build: an output zero point read off by 3 (a stale or mis-parsed quantization parameter) */
#endif
    y = y < q->act_min ? q->act_min : y;
    return (int8_t)(y > q->act_max ? q->act_max : y);
}

#ifdef TMLR_RIGHT_RUN
/* The requantization loops' activation clamp: %[hi] into [%[mn], %[mx]]. */
#define CLAMP_HI                                                                                                   \
    "cmp %[hi], %[mn]\n\t"                                                                                          \
    "it lt\n\t"                                                                                                     \
    "movlt %[hi], %[mn]\n\t"                                                                                        \
    "cmp %[hi], %[mx]\n\t"                                                                                          \
    "it gt\n\t"                                                                                                     \
    "movgt %[hi], %[mx]\n\t"

/* finish_q for the accumulators acc..end (at least one) of one channel in the common case (q->right > 0), stored
 * to consecutive bytes from y: 16 instructions per output, every constant in a register (GCC -Os spilled half of
 * them to the stack). The sum tmlr_requantize_right forms, acc M + nudge - [acc < 0] 2^31, in three instructions:
 * the sign word s = acc >> 31 (0 or -1) makes nudge + s 2^31 by ADDS of s shifted left 31 and ADC of s
 * (-2^31 is 0xFFFFFFFF_80000000), then SMLAL adds acc M; its high word shifted right by r - 1 is the result. */
TMLR_HOT void finish_run(const int32_t *acc, const int32_t *end, int8_t *y, const requant *q)
{
    /* tmlr_requant_nudge(r) = 2^30 + 2^(30+r) as two words, without its 64-bit shift: no carry between them */
    const uint32_t nudge_lo = q->right == 1 ? 0xC0000000u : 0x40000000u, nudge_hi = ((uint32_t)1 << q->right) >> 2;
    /* r - 1 and z_y in one register (twelve operands fit where thirteen did not): a register-specified ASR shifts
     * by the register's low byte only, and ADD ..., ASR #16 takes the zero point from the high half */
    const int32_t shift_zp = (int32_t)((uint32_t)q->out_zp << 16) | (q->right - 1);
    int32_t a, lo, hi;
    __asm__ volatile("1: ldr %[a], [%[acc]], #4\n\t"
                     "asr %[hi], %[a], #31\n\t"
                     "adds %[lo], %[nlo], %[hi], lsl #31\n\t"
                     "adc %[hi], %[nhi], %[hi]\n\t"
                     "smlal %[lo], %[hi], %[a], %[m]\n\t"
                     "asr %[hi], %[hi], %[sz]\n\t"
                     "add %[hi], %[hi], %[sz], asr #16\n\t"
                     CLAMP_HI
                     "strb %[hi], [%[y]], #1\n\t"
                     "cmp %[acc], %[end]\n\t"
                     "bne 1b"
                     : [acc] "+r"(acc), [y] "+r"(y), [a] "=&r"(a), [lo] "=&r"(lo), [hi] "=&r"(hi)
                     : [end] "r"(end), [nlo] "r"(nudge_lo), [nhi] "r"(nudge_hi), [m] "r"(q->mult), [sz] "r"(shift_zp),
                       [mn] "r"(q->act_min), [mx] "r"(q->act_max)
                     : "cc", "memory");
}
#endif

/* n accumulators of output channel c requantized and stored to consecutive bytes from y: where every run of outputs
 * of one requantization is made, out of line, called once per channel and pixel block, output row or run of windows
 * (flash: issue 21's +2 KB); outputs one per channel go through requantize_channels. */
static __attribute__((noinline)) void requantize_out(const tmlr_layer *l, int32_t c, const int32_t *acc, int32_t n,
                                                     int8_t *y)
{
    const requant q = requant_of(l, c);
#ifdef TMLR_RIGHT_RUN
    if (q.right > 0) {
        finish_run(acc, acc + n, y, &q);
        return;
    }
#endif
    for (int32_t j = 0; j < n; j++) {
        y[j] = finish_q(acc[j], &q);
    }
}

/* n accumulators of consecutive output channels c0.. of a per-channel layer, one each, requantized by their own
 * channels' parameters and stored to consecutive bytes from y: a fully connected layer's outputs, a one-column
 * convolution's pixel. On Thumb-2 the channels of the common case (M > 0, a right shift r in [1, 31]) run in
 * `channel_run`; another channel, and every channel elsewhere, by requantize_out. */
#ifdef TMLR_RIGHT_RUN
/* The common-case channels from *acc on, until end or the first other one, 27 instructions an output with every
 * operand in a register: tmlr_requantize_right's floor((acc M + 2^30 + 2^(30+r) - [acc < 0] 2^31) / 2^(31+r)) as
 * floor((floor(Q / 2^(30+r)) + 1) / 2) with Q = acc M + 2^30 - [acc < 0] 2^31 (floor((floor(a / b) + n) / d) =
 * floor((a + n b) / (b d)), b = 2^(30+r)), and floor(Q / 2^(30+r)) = floor(T / 2^(r-1)) with T = floor(Q / 2^31),
 * which fits 32 bits (|acc M| < 2^62): SMLAL onto Q's constant (0x40000000 low word, the sign word high: one ASR
 * and two logic instructions), T from both words, and z_y folded in as 2 z_y + 1 before the last halving. No
 * per-channel nudge to build. */
TMLR_HOT void channel_run(const int32_t **acc, const int32_t *end, const int32_t **mult, int32_t shift_delta,
                          int8_t **y, int32_t zp, int32_t act_min, int32_t act_max)
{
    const int32_t *a_p = *acc, *m_p = *mult;
    int8_t *y_p = *y;
    const int32_t zp2 = 2 * zp + 1;
    int32_t a, m, r1, lo, hi;
    /* hi and r - 1 in r0-r7 ("l"), for the 16-bit forms of the shifts (flag-setting: the flags are dead there) */
    __asm__ volatile("1: ldr %[m], [%[mp]]\n\t"
                     "ldr %[r1], [%[mp], %[sd]]\n\t"
                     "mvns %[r1], %[r1]\n\t" /* r - 1 = -shift - 1 */
                     "cmp %[r1], #30\n\t"
                     "bhi 2f\n\t"
                     "cmp %[m], #0\n\t"
                     "ble 2f\n\t"
                     "ldr %[a], [%[ap]], #4\n\t"
                     "asr %[hi], %[a], #31\n\t"
                     "and %[lo], %[hi], #0x80000000\n\t"
                     "orr %[lo], %[lo], #0x40000000\n\t"
                     "smlal %[lo], %[hi], %[a], %[m]\n\t"
                     "lsls %[hi], %[hi], #1\n\t"
                     "orr %[hi], %[hi], %[lo], lsr #31\n\t"
                     "asrs %[hi], %[hi], %[r1]\n\t"
                     "add %[hi], %[zp2]\n\t"
                     "asrs %[hi], %[hi], #1\n\t"
                     CLAMP_HI
                     "adds %[mp], #4\n\t"
                     "strb %[hi], [%[yp]], #1\n\t"
                     "cmp %[ap], %[end]\n\t"
                     "bne 1b\n"
                     "2:"
                     : [ap] "+r"(a_p), [mp] "+r"(m_p), [yp] "+r"(y_p), [a] "=&r"(a), [m] "=&r"(m), [r1] "=&l"(r1),
                       [lo] "=&r"(lo), [hi] "=&l"(hi)
                     : [end] "r"(end), [sd] "r"(shift_delta), [zp2] "r"(zp2), [mn] "r"(act_min), [mx] "r"(act_max)
                     : "cc", "memory");
    *acc = a_p;
    *mult = m_p;
    *y = y_p;
}
#endif

static __attribute__((noinline)) void requantize_channels(const tmlr_layer *l, int32_t c0, const int32_t *acc,
                                                          int32_t n, int8_t *y)
{
    const int32_t *const end = acc + n;
    const int32_t *mult = l->mult + c0;
    while (acc < end) {
#ifdef TMLR_RIGHT_RUN
        /* the shifts' byte offset from the multipliers (two arrays: as addresses, not a pointer difference) */
        channel_run(&acc, end, &mult, (int32_t)((uintptr_t)l->shift - (uintptr_t)l->mult), &y, l->out_zp, l->act_min,
                    l->act_max);
        if (acc == end) {
            break;
        }
#endif
        requantize_out(l, (int32_t)(mult - l->mult), acc++, 1, y++);
        mult++;
    }
}

/* first k in [0, n) with 0 <= base + k * step < limit, and one past the last (step > 0) */
static void valid_taps(int32_t base, int32_t step, int32_t n, int32_t limit, int32_t *lo, int32_t *hi)
{
    int32_t k0 = 0, k1 = n;
    while (k0 < n && base + k0 * step < 0) {
        k0++;
    }
    while (k1 > k0 && base + (k1 - 1) * step >= limit) {
        k1--;
    }
    *lo = k0;
    *hi = k1;
}

/* ------------------------------------------------------------------ fast paths (im2col + dot products) */

/* The im2col scratch (TMLR_MODEL_MAX_COL, tmlr_model.h): one output pixel's inputs, (x - in_zp) as int16 in the
 * weights' order (input channel, ky, kx), 0 where padded — or four of them interleaved (`interleave`) and the one
 * being gathered; a depthwise layer's padded channel image; a fully connected layer's input. */
static int16_t col_buf[TMLR_MODEL_MAX_COL] __attribute__((aligned(8)));

/* The n % 4 last values of four interleaved columns (`interleave`), from t, dotted with w (their weights). */
static void dot4_tail(const int16_t *t, const int8_t *w, int32_t r, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t k = 0; k < r; k++) {
        const int32_t wk = w[k];
        a0 += t[k] * wk;
        a1 += t[r + k] * wk;
        a2 += t[2 * r + k] * wk;
        a3 += t[3 * r + k] * wk;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

#if defined(__ARM_FEATURE_SIMD32) && !defined(TMLR_PORTABLE_KERNELS)
TMLR_HOT uint32_t load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* one LDR: Cortex-M4 loads unaligned words */
    return v;
}

/* Columns and weights meet in "lane order": of every four values, SXTB16 takes bytes 0 and 2 of a weight word and,
 * rotated by 8, bytes 1 and 3, so a column holds each block of four as (x0, x2, x1, x3) — then one SMLAD per pair,
 * no re-pairing of the weights (CMSIS-NN's read_and_pad_reordered and its "reordered" matrix kernels pair operands
 * the same way). A column shorter than a block, or its last n % 4 values, stay in order and are summed one by one. */
static __attribute__((noinline)) void lane_order(int16_t *col, int32_t n)
{
    for (int32_t k = 0; k + 4 <= n; k += 4) {
        const int16_t t = col[k + 1];
        col[k + 1] = col[k + 2];
        col[k + 2] = t;
    }
}

/* SXTB16 of v rotated right by 8 (bytes 1 and 3): one instruction (GCC 12 emits a separate ROR for the ACLE form). */
TMLR_HOT int32_t sxtb16_ror8(uint32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* A word of col_buf (aligned; may_alias: the buffer is written as int16). */
typedef uint32_t __attribute__((may_alias)) col_word;

/* m weight rows (k_len apart from w) dotted with the column in col_buf (lane order), each sum added to acc[o] — two
 * rows at a time, each column word loaded once for both; an odd last row is run twice, its twin sum (from 0) written
 * to acc[m]. Out of line, and looping over the rows itself: in its own registers the loop keeps its pointers and
 * sums out of the stack, and a call per pair of rows had cost about 40 instructions of calling and bookkeeping. */
TMLR_KERNEL void dot_rows(const int8_t *w, int32_t m, int32_t k_len, int32_t *acc)
{
    for (int32_t o = 0; o < m; o += 2, w += 2 * k_len, acc += 2) {
        const int8_t *w0 = w, *w1 = o + 1 < m ? w + k_len : w;
        const int16_t *col = col_buf;
        int32_t s0 = acc[0], s1 = w1 != w0 ? acc[1] : 0;
        const int8_t *const w0_end = w0 + (k_len & ~3);
        uint32_t c02, c13, even, odd;
        /* per four inputs: the column's two words by one LDRD (word-aligned: col is col_buf, steps of 8 bytes), each
         * row's weight word into (w0, w2) and (w1, w3) lanes and two SMLAD; the test at the top (k_len may be < 4) */
        __asm__("b 2f\n"
                "1: ldrd %[c02], %[c13], [%[col]], #8\n\t"
                "ldr %[o], [%[w0]], #4\n\t"
                "sxtb16 %[e], %[o]\n\t"
                "sxtb16 %[o], %[o], ror #8\n\t"
                "smlad %[s0], %[c02], %[e], %[s0]\n\t"
                "smlad %[s0], %[c13], %[o], %[s0]\n\t"
                "ldr %[o], [%[w1]], #4\n\t"
                "sxtb16 %[e], %[o]\n\t"
                "sxtb16 %[o], %[o], ror #8\n\t"
                "smlad %[s1], %[c02], %[e], %[s1]\n\t"
                "smlad %[s1], %[c13], %[o], %[s1]\n"
                "2: cmp %[w0], %[we]\n\t"
                "bne 1b"
                : [s0] "+r"(s0), [s1] "+r"(s1), [w0] "+r"(w0), [w1] "+r"(w1), [col] "+r"(col), [c02] "=&r"(c02),
                  [c13] "=&r"(c13), [e] "=&r"(even), [o] "=&r"(odd)
                : [we] "r"(w0_end)
                : "cc", "memory");
        for (int32_t k = 0; k < (k_len & 3); k++) {
            s0 += (int32_t)col[k] * (int32_t)w0[k];
            s1 += (int32_t)col[k] * (int32_t)w1[k];
        }
        acc[0] = s0;
        acc[1] = s1;
    }
}

/* Four interleaved columns (`interleave`) dotted with one weight row: per block of four inputs, one weight word
 * expanded once and the four pixels' eight column words read in order through one pointer. Out of line, the loop
 * in its own registers (inlined into the channel loop with four column pointers, GCC -Os spilled five stack loads and
 * stores per block). */
TMLR_KERNEL void dot4_s16_s8(const int16_t *cols, const int8_t *w, int32_t n, int32_t *acc)
{
    const int8_t *const w_end = w + (n & ~3);
    if (w < w_end) {
        int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        uint32_t even, odd, c0, c1;
        /* per block: the weight word into (w0, w2) and (w1, w3) lanes, then each pixel's two column words by one
         * LDRD (it needs word alignment: col_buf is 8-byte aligned, a pixel's block 8 bytes) and two SMLAD; the test
         * at the bottom. In C, GCC -Os kept the weight pointer on the stack: a load and a store more per block. */
        __asm__("1: ldr %[c0], [%[w]], #4\n\t"
                "sxtb16 %[e], %[c0]\n\t"
                "sxtb16 %[o], %[c0], ror #8\n\t"
                "ldrd %[c0], %[c1], [%[c]], #8\n\t"
                "smlad %[a0], %[c0], %[e], %[a0]\n\t"
                "smlad %[a0], %[c1], %[o], %[a0]\n\t"
                "ldrd %[c0], %[c1], [%[c]], #8\n\t"
                "smlad %[a1], %[c0], %[e], %[a1]\n\t"
                "smlad %[a1], %[c1], %[o], %[a1]\n\t"
                "ldrd %[c0], %[c1], [%[c]], #8\n\t"
                "smlad %[a2], %[c0], %[e], %[a2]\n\t"
                "smlad %[a2], %[c1], %[o], %[a2]\n\t"
                "ldrd %[c0], %[c1], [%[c]], #8\n\t"
                "smlad %[a3], %[c0], %[e], %[a3]\n\t"
                "smlad %[a3], %[c1], %[o], %[a3]\n\t"
                "cmp %[w], %[we]\n\t"
                "bne 1b"
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [c] "+r"(cols),
                  [e] "=&r"(even), [o] "=&r"(odd), [c0] "=&r"(c0), [c1] "=&r"(c1)
                : [we] "r"(w_end)
                : "cc", "memory");
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
    }
    if (n & 3) {
        dot4_tail(cols, w, n & 3, acc);
    }
}

/* SXTAB16 of v rotated right by 8: a + bytes 1 and 3 (one instruction, as sxtb16_ror8). */
TMLR_HOT int32_t sxtab16_ror8(int32_t a, uint32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* The four interleaved columns (`interleave`) of a pointwise layer's pixels p..p+3 (input channel c's four values
 * one word at x + c hw + p): per block of four channels, four word loads, each split into (pixel 0, pixel 2) and
 * (pixel 1, pixel 3) int16 lanes minus the zero point by SXTAB16, then paired across channels (halfword masks and
 * shifts) into each pixel's two lane-ordered words. */
static __attribute__((noinline)) void gather_pointwise4(const int8_t *x, int32_t hw, int32_t n, int32_t zp, int16_t *cols)
{
    const int32_t minus_zp = (int32_t)(((uint32_t)(-zp) & 0xFFFFu) * 0x10001u);
    col_word *c = (col_word *)cols;
    int32_t b = 0;
    for (; b + 4 <= n; b += 4, c += 8) {
        const uint32_t w0 = load32(x + (size_t)b * (size_t)hw), w1 = load32(x + (size_t)(b + 1) * (size_t)hw);
        const uint32_t w2 = load32(x + (size_t)(b + 2) * (size_t)hw), w3 = load32(x + (size_t)(b + 3) * (size_t)hw);
        const uint32_t e0 = (uint32_t)__sxtab16(minus_zp, (int32_t)w0), o0 = (uint32_t)sxtab16_ror8(minus_zp, w0);
        const uint32_t e1 = (uint32_t)__sxtab16(minus_zp, (int32_t)w1), o1 = (uint32_t)sxtab16_ror8(minus_zp, w1);
        const uint32_t e2 = (uint32_t)__sxtab16(minus_zp, (int32_t)w2), o2 = (uint32_t)sxtab16_ror8(minus_zp, w2);
        const uint32_t e3 = (uint32_t)__sxtab16(minus_zp, (int32_t)w3), o3 = (uint32_t)sxtab16_ror8(minus_zp, w3);
        c[0] = (e0 & 0xFFFFu) | (e2 << 16); /* pixel 0: (x_b, x_b+2), (x_b+1, x_b+3) */
        c[1] = (e1 & 0xFFFFu) | (e3 << 16);
        c[2] = (o0 & 0xFFFFu) | (o2 << 16); /* pixel 1 */
        c[3] = (o1 & 0xFFFFu) | (o3 << 16);
        c[4] = (e0 >> 16) | (e2 & 0xFFFF0000u); /* pixel 2 */
        c[5] = (e1 >> 16) | (e3 & 0xFFFF0000u);
        c[6] = (o0 >> 16) | (o2 & 0xFFFF0000u); /* pixel 3 */
        c[7] = (o1 >> 16) | (o3 & 0xFFFF0000u);
    }
    int16_t *t = (int16_t *)c;
    const int32_t r = n - b;
    for (int32_t k = 0; k < r; k++) {
        for (int32_t j = 0; j < 4; j++) {
            t[j * r + k] = (int16_t)(x[(size_t)(b + k) * (size_t)hw + (size_t)j] - zp);
        }
    }
}

/* A contiguous int8 vector as a column of (x - zp) in lane order: SXTAB16 adds -zp to two sign-extended bytes at
 * once, so each word of four inputs becomes its two lane pairs by one load, two SXTAB16 and one store. */
TMLR_HOT void column_of(const int8_t *x, int32_t n, int32_t zp, int16_t *col)
{
    const int32_t minus_zp = (int32_t)(((uint32_t)(-zp) & 0xFFFFu) * 0x10001u);
    int32_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const uint32_t v = load32(x + k);
        const uint32_t even = (uint32_t)__sxtab16(minus_zp, (int32_t)v);
        const uint32_t odd = (uint32_t)sxtab16_ror8(minus_zp, v);
        memcpy(col + k, &even, 4);
        memcpy(col + k + 2, &odd, 4);
    }
    for (; k < n; k++) {
        col[k] = (int16_t)(x[k] - zp);
    }
}
#else
/* The portable dot products (cores without the DSP extension, and the host build): columns in plain order. */
TMLR_HOT void lane_order(int16_t *col, int32_t n)
{
    (void)col;
    (void)n;
}

TMLR_HOT int32_t dot_s16_s8(const int16_t *col, const int8_t *w, int32_t n, int32_t acc)
{
    for (int32_t k = 0; k < n; k++) {
        acc += (int32_t)col[k] * (int32_t)w[k];
    }
    return acc;
}

TMLR_HOT void dot_rows(const int8_t *w, int32_t m, int32_t k_len, int32_t *acc)
{
    for (int32_t o = 0; o < m; o++) {
        acc[o] = dot_s16_s8(col_buf, w + (size_t)o * (size_t)k_len, k_len, acc[o]);
    }
}

TMLR_HOT void dot4_s16_s8(const int16_t *cols, const int8_t *w, int32_t n, int32_t *acc)
{
    const int32_t blocks = n >> 2;
    for (int32_t b = 0; b < blocks; b++) {
        for (int32_t j = 0; j < 4; j++) {
            acc[j] = dot_s16_s8(cols + 16 * b + 4 * j, w + 4 * b, 4, acc[j]);
        }
    }
    dot4_tail(cols + 16 * blocks, w + 4 * blocks, n & 3, acc);
}

TMLR_HOT void column_of(const int8_t *x, int32_t n, int32_t zp, int16_t *col)
{
    for (int32_t k = 0; k < n; k++) {
        col[k] = (int16_t)(x[k] - zp);
    }
}

TMLR_HOT void gather_pointwise4(const int8_t *x, int32_t hw, int32_t n, int32_t zp, int16_t *cols)
{
    const int32_t blocks = n >> 2, r = n & 3;
    for (int32_t k = 0; k < n; k++) {
        const int8_t *xk = x + (size_t)k * (size_t)hw;
        int16_t *d = k < 4 * blocks ? cols + 16 * (k >> 2) + (k & 3) : cols + 16 * blocks + (k - 4 * blocks);
        const int32_t step = k < 4 * blocks ? 4 : r;
        for (int32_t j = 0; j < 4; j++) {
            d[j * step] = (int16_t)(xk[j] - zp);
        }
    }
}
#endif

/* The column of output pixel p (row-major over out_h x out_w) of the group whose input starts at xg: its inputs
 * (x - zp) as int16 in the weights' order (input channel, ky, kx), 0 where padded, in lane order. A 1x1 stride-1
 * unpadded layer reads one value per channel. */
static void gather_column(const tmlr_layer *l, const int8_t *xg, int32_t p, int16_t *col)
{
    const int32_t cin_g = l->in_c / l->group, kh = l->kh, kw = l->kw, taps = kh * kw, k_len = cin_g * taps;
    const int32_t in_h = l->in_h, in_w = l->in_w, hw_in = in_h * in_w, zp = l->in_zp;
    const int32_t iy0 = (p / l->out_w) * l->sh - l->pad_t, ix0 = (p % l->out_w) * l->sw - l->pad_l;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi;
    valid_taps(iy0, l->dh, kh, in_h, &ky_lo, &ky_hi);
    valid_taps(ix0, l->dw, kw, in_w, &kx_lo, &kx_hi);
    if (ky_lo != 0 || ky_hi != kh || kx_lo != 0 || kx_hi != kw) {
        memset(col, 0, (size_t)k_len * sizeof col[0]); /* a border pixel: padded taps are 0 */
    }
    for (int32_t ic = 0; ic < cin_g; ic++) {
        const int8_t *xc = xg + (size_t)ic * (size_t)hw_in;
        for (int32_t ky = ky_lo; ky < ky_hi; ky++) {
            const int8_t *xr = xc + (iy0 + ky * l->dh) * in_w + ix0;
            int16_t *c = col + ic * taps + ky * kw;
            for (int32_t kx = kx_lo; kx < kx_hi; kx++) {
                c[kx] = (int16_t)(xr[kx * l->dw] - zp);
            }
        }
    }
    lane_order(col, k_len);
}

/* Column j (0..3) of four, copied into the interleaved layout `dot4_s16_s8` reads: for each block b of four values,
 * the four columns' blocks side by side (column j's at 16 b + 4 j), then each column's n % 4 last values (column j's
 * at 16 (n / 4) + j (n % 4)). */
static void interleave(const int16_t *col, int32_t n, int32_t j, int16_t *cols)
{
    const int32_t blocks = n >> 2, r = n & 3;
    for (int32_t b = 0; b < blocks; b++) {
        int16_t *d = cols + 16 * b + 4 * j;
        const int16_t *v = col + 4 * b;
        d[0] = v[0];
        d[1] = v[1];
        d[2] = v[2];
        d[3] = v[3];
    }
    for (int32_t k = 0; k < r; k++) {
        cols[16 * blocks + j * r + k] = col[4 * blocks + k];
    }
}

#define ROWS_RUN 16 /* sums rows_run holds for one requantization call */

/* n output channels (the first oc0, weight rows from w) of the one column in col_buf, outputs y_step apart: the fully
 * connected layer, and a convolution whose column is too long for four beside it. Up to ROWS_RUN rows' sums
 * (`dot_rows`) requantized by one call (requantize_out for one requantization, requantize_channels for one per
 * channel) into consecutive bytes, then spread. */
TMLR_KERNEL void rows_run(const tmlr_layer *l, const int8_t *w, int32_t oc0, int32_t n, int32_t k_len, int8_t *y,
                          int32_t y_step)
{
    int32_t acc[ROWS_RUN + 1]; /* + 1: an odd last row's twin sum (dot_rows) */
    int8_t strided[ROWS_RUN];  /* the outputs of a pixel, before they go y_step apart */
    for (int32_t o0 = 0; o0 < n; o0 += ROWS_RUN) {
        const int32_t m = n - o0 < ROWS_RUN ? n - o0 : ROWS_RUN, c0 = oc0 + o0;
        memcpy(acc, l->bias + c0, (size_t)m * sizeof acc[0]);
        dot_rows(w + (size_t)o0 * (size_t)k_len, m, k_len, acc);
        int8_t *const out = y_step == 1 ? y + o0 : strided;
        if (l->per_channel) {
            requantize_channels(l, c0, acc, m, out);
        } else {
            requantize_out(l, 0, acc, m, out);
        }
        for (int32_t o = 0; o < m && y_step != 1; o++) {
            y[(size_t)(o0 + o) * (size_t)y_step] = strided[o];
        }
    }
}

/* Every output channel of a group (first oc0, n of them) for the four interleaved columns in col_buf: one four-column
 * dot product per channel, its requantization read once for the four; `count` of them stored (the rest repeat a
 * pixel). Inlined into conv_columns, its one caller: 40 B of flash toward requantize_channels, for 1-2% more
 * instructions in the convolutions that take it (QEMU: digits' pw1 3.24 -> 3.30 a MAC, conv1 7.69 -> 7.76). */
TMLR_HOT void four_columns_out(const tmlr_layer *l, const int8_t *wg, int32_t oc0, int32_t n, int32_t k_len,
                                  int32_t count, int8_t *yp, int32_t hw_out)
{
    for (int32_t o = 0; o < n; o++) {
        const int32_t oc = oc0 + o;
        int32_t acc[4] = {l->bias[oc], l->bias[oc], l->bias[oc], l->bias[oc]};
        dot4_s16_s8(col_buf, wg + (size_t)o * (size_t)k_len, k_len, acc);
        requantize_out(l, oc, acc, count, yp);
        yp += hw_out;
    }
}

/* A convolution by columns (im2col into col_buf): four output pixels' columns at a time while they fit beside the one
 * being gathered (5 k_len <= TMLR_MODEL_MAX_COL), each weight word then expanded once for the four (dot4) and an
 * output channel's requantization read once for them; else one pixel at a time. The last group's missing pixels
 * repeat its last pixel, and only its own outputs are stored. Padded taps contribute 0, as TFLM skips them (integer
 * sums do not depend on their order). The model source checks that its longest column fits (tmlr_model.h). */
TMLR_KERNEL void conv_columns(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int32_t group = l->group, cin_g = l->in_c / group, cout_g = l->out_c / group;
    const int32_t k_len = cin_g * l->kh * l->kw, hw_in = l->in_h * l->in_w, hw_out = l->out_h * l->out_w;
    const int32_t step = 5 * k_len <= TMLR_MODEL_MAX_COL ? 4 : 1;
    int16_t *gathered = step == 4 ? col_buf + 4 * k_len : col_buf;
    const int pointwise = l->kh == 1 && l->kw == 1 && l->sh == 1 && l->sw == 1 && l->pad_t == 0 && l->pad_l == 0 &&
                          l->out_w == l->in_w && l->out_h == l->in_h;
    for (int32_t g = 0; g < group; g++) {
        const int8_t *xg = x + (size_t)(g * cin_g) * (size_t)hw_in;
        const int8_t *wg = l->weights + (size_t)(g * cout_g) * (size_t)k_len;
        for (int32_t p = 0; p < hw_out; p += step) {
            const int32_t count = hw_out - p < step ? hw_out - p : step;
            int8_t *yp = y + (size_t)(g * cout_g) * (size_t)hw_out + p;
            if (step == 4) {
                if (pointwise && count == 4) {
                    gather_pointwise4(xg + p, hw_in, k_len, l->in_zp, col_buf);
                } else {
                    for (int32_t j = 0; j < 4; j++) {
                        gather_column(l, xg, p + (j < count ? j : count - 1), gathered);
                        interleave(gathered, k_len, j, col_buf);
                    }
                }
                four_columns_out(l, wg, g * cout_g, cout_g, k_len, count, yp, hw_out);
                continue;
            }
            gather_column(l, xg, p, col_buf);
            rows_run(l, wg, g * cout_g, cout_g, k_len, yp, hw_out);
        }
    }
}

/* One channel's 3x3 kernel, ready for `dw3_run`: the zero point folded into the bias, and on the Cortex-M4
 * the taps as int16 pairs — (first, last) of each row for SMLAD, the middle taps w1, w4 paired for SMLABB/SMLABT,
 * w7 alone. */
typedef struct {
    int32_t folded; /* bias - zp * sum(w): acc = folded + sum(x * w) over raw int8 x, exact in int32 */
    int32_t w[9];
#if defined(__ARM_FEATURE_SIMD32) && !defined(TMLR_PORTABLE_KERNELS)
    int32_t w02_0, w02_1, w02_2, w1_01;
#endif
} dw3_kernel;

/* The accumulators of n windows of one row of 3x3 windows, the first window's top-left at r0, stepping sw, rows in_w
 * apart (a word load reads one byte past a window: the caller's image has that byte). */
TMLR_HOT void dw3_run(const int8_t *r0, int32_t in_w, int32_t sw, int32_t n, const dw3_kernel *k, int32_t *out)
{
    for (int32_t i = 0; i < n; i++, r0 += sw) {
        const int8_t *r1 = r0 + in_w, *r2 = r1 + in_w;
        int32_t acc;
#if defined(__ARM_FEATURE_SIMD32) && !defined(TMLR_PORTABLE_KERNELS)
        /* a word from each row: (x0, x2) by SMLAD, x1 by SMLABB/SMLABT (x3 unused) */
        const uint32_t a = load32(r0), b = load32(r1), d = load32(r2);
        acc = __smlad(__sxtb16((int32_t)a), k->w02_0, k->folded);
        acc = __smlabb(sxtb16_ror8(a), k->w1_01, acc);
        acc = __smlad(__sxtb16((int32_t)b), k->w02_1, acc);
        acc = __smlabt(sxtb16_ror8(b), k->w1_01, acc);
        acc = __smlad(__sxtb16((int32_t)d), k->w02_2, acc);
        acc = __smlabb(sxtb16_ror8(d), k->w[7], acc);
#else
        const int32_t *w = k->w;
        acc = k->folded + r0[0] * w[0] + r0[1] * w[1] + r0[2] * w[2] + r1[0] * w[3] + r1[1] * w[4] +
              r1[2] * w[5] + r2[0] * w[6] + r2[1] * w[7] + r2[2] * w[8];
#endif
        out[i] = acc;
    }
}

/* n bytes a word at a time (the Cortex-M4 loads and stores unaligned words): a row of a few bytes would cost a call
 * and a byte loop in newlib-nano's memcpy. */
TMLR_HOT void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t k = 0;
    for (; k + 4 <= n; k += 4) {
        uint32_t v;
        memcpy(&v, src + k, 4);
        memcpy(dst + k, &v, 4);
    }
    for (; k < n; k++) {
        dst[k] = src[k];
    }
}

#define DW3_RUN 16 /* windows whose accumulators are requantized by one call */

/* The padded image of one channel for a 3x3 depthwise layer: rows (out_h - 1) * sh + 3, columns (out_w - 1) * sw + 3,
 * and the byte a word load reads past the last window. */
static int32_t dw3_image_bytes(const tmlr_layer *l)
{
    return ((l->out_h - 1) * l->sh + 3) * ((l->out_w - 1) * l->sw + 3) + 1;
}

/* A 3x3 depthwise convolution (one output channel per input channel, no dilation). Each channel is copied into an
 * image padded with the input zero point (in col_buf's bytes), so that every output is an interior one: with the
 * zero point folded into the bias (acc = bias - zp * sum(w) + sum(x * w)), a padded tap adds zp * w - zp * w = 0,
 * as TFLM's skipped taps do. Layers whose image does not fit col_buf take the column path. */
TMLR_KERNEL void depthwise_3x3(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int32_t in_h = l->in_h, in_w = l->in_w, out_h = l->out_h, out_w = l->out_w;
    const int32_t sh = l->sh, sw = l->sw, pad_t = l->pad_t, pad_l = l->pad_l, zp = l->in_zp;
    const int32_t ph = (out_h - 1) * sh + 3, pw = (out_w - 1) * sw + 3;
    const int32_t c_lo = pad_l < pw ? pad_l : pw, c_hi = pad_l + in_w < pw ? pad_l + in_w : pw;
    const int32_t rows = in_h < ph - pad_t ? in_h : ph - pad_t; /* input rows the image holds */
    int8_t *image = (int8_t *)col_buf;
    memset(image, zp, (size_t)(ph * pw + 1)); /* the padding: the same bytes for every channel */
    for (int32_t c = 0; c < l->out_c; c++) {
        const int8_t *xc = x + (size_t)c * (size_t)(in_h * in_w);
        for (int32_t iy = 0; iy < rows && c_hi > c_lo; iy++) {
            copy_bytes(image + (iy + pad_t) * pw + c_lo, xc + iy * in_w, c_hi - c_lo);
        }
#ifdef TMLR_FAULT_DEPTHWISE_ORDER
        /* a deliberately faulty build (tests of `tmlrepair diagnose`): the weights read in reversed channel order, as
         * a layout mix-up between NHWC and NCHW weights does */
        const int8_t *wc = l->weights + 9 * (l->out_c - 1 - c);
#else
        const int8_t *wc = l->weights + 9 * c;
#endif
        dw3_kernel k;
        int32_t sum = 0;
        for (int32_t t = 0; t < 9; t++) {
            k.w[t] = wc[t];
            sum += wc[t];
        }
        k.folded = l->bias[c] - zp * sum;
#if defined(__ARM_FEATURE_SIMD32) && !defined(TMLR_PORTABLE_KERNELS)
        k.w02_0 = (int32_t)(((uint32_t)k.w[0] & 0xFFFFu) | ((uint32_t)k.w[2] << 16));
        k.w02_1 = (int32_t)(((uint32_t)k.w[3] & 0xFFFFu) | ((uint32_t)k.w[5] << 16));
        k.w02_2 = (int32_t)(((uint32_t)k.w[6] & 0xFFFFu) | ((uint32_t)k.w[8] << 16));
        k.w1_01 = (int32_t)(((uint32_t)k.w[1] & 0xFFFFu) | ((uint32_t)k.w[4] << 16));
#endif
        int8_t *yc = y + (size_t)c * (size_t)(out_h * out_w);
        for (int32_t oy = 0; oy < out_h; oy++) {
            for (int32_t ox = 0; ox < out_w; ox += DW3_RUN) { /* a row in runs of DW3_RUN windows, each stored at once */
                const int32_t n = out_w - ox < DW3_RUN ? out_w - ox : DW3_RUN;
                int32_t acc[DW3_RUN];
                dw3_run(image + oy * sh * pw + ox * sw, pw, sw, n, &k, acc);
                requantize_out(l, c, acc, n, yc + oy * out_w + ox);
            }
        }
    }
}

/* A convolution: a 3x3 depthwise layer whose padded channel image fits col_buf by `depthwise_3x3`, any other by
 * columns. Inlined into the layer switch, its one caller, as are `add` and `transpose`: 56 B of flash toward
 * `rows_run`, the same instruction counts. */
TMLR_HOT void conv(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    if (l->kh == 3 && l->kw == 3 && l->dh == 1 && l->dw == 1 && l->group == l->in_c && l->out_c == l->in_c &&
        dw3_image_bytes(l) <= (int32_t)sizeof col_buf) {
        depthwise_3x3(l, x, y);
    } else {
        conv_columns(l, x, y);
    }
}

/* A fully connected layer: the input as one column (it fits col_buf: the model source checks), dotted with two
 * outputs' weights at a time. */
TMLR_HOT void fc(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    column_of(x, l->in_c, l->in_zp, col_buf);
    rows_run(l, l->weights, 0, l->out_c, l->in_c, y, 1);
}

/* Pooling without padding. Max: the window's maximum, requantized. Average (ONNX QDQ): the sum of (x - zp),
 * requantized (its multiplier holds 1 / count). TFLM's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool,
 * CMSIS-NN arm_avgpool_s8): the raw values summed (input and output share scale and zero point), divided by the
 * window size rounding half away from zero with C truncation, and clamped to the activation range. */
TMLR_KERNEL void pool(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int is_max = l->op == TMLR_LAYER_MAXPOOL, tflm = l->op == TMLR_LAYER_AVGPOOL_TFLM;
    const int32_t count = l->kh * l->kw;
#ifdef TMLR_FAULT_AVGPOOL_ZERO_POINT
    const int32_t zp = 0; /* faulty build: TFLM's raw sum where this layer needs the zero point taken off */
#else
    const int32_t zp = tflm ? 0 : l->in_zp;
#endif
    for (int32_t c = 0; c < l->out_c; c++) {
        const int8_t *xc = x + (size_t)c * (size_t)(l->in_h * l->in_w);
        for (int32_t oy = 0; oy < l->out_h; oy++) {
            for (int32_t ox = 0; ox < l->out_w; ox++) {
                int32_t acc = is_max ? -128 : 0;
                for (int32_t ky = 0; ky < l->kh; ky++) {
                    for (int32_t kx = 0; kx < l->kw; kx++) {
                        const int32_t v = xc[(oy * l->sh + ky) * l->in_w + ox * l->sw + kx];
                        acc = is_max ? (v > acc ? v : acc) : acc + v - zp;
                    }
                }
                int8_t *out = y + (c * l->out_h + oy) * l->out_w + ox;
                if (tflm) {
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    *out = (int8_t)(acc < l->act_min ? l->act_min : (acc > l->act_max ? l->act_max : acc));
                } else {
                    acc = is_max ? acc - l->in_zp : acc;
                    requantize_out(l, 0, &acc, 1, out);
                }
            }
        }
    }
}

TMLR_HOT void add(const tmlr_layer *l, const int8_t *a, const int8_t *b, int8_t *y)
{
    for (int32_t i = 0; i < l->size; i++) {
        const int32_t xa = tmlr_requantize(((int32_t)a[i] - l->in_zp) * (1 << 20), l->mult1, l->shift1);
        const int32_t xb = tmlr_requantize(((int32_t)b[i] - l->in1_zp) * (1 << 20), l->mult2, l->shift2);
        const int32_t sum = xa + xb;
        requantize_out(l, 0, &sum, 1, y + i);
    }
}

/* y = x with its ndim (<= 4) axes permuted: output axis d is input axis perm[d]. The output is written in order;
 * the input position follows it as an odometer over the output's axes (one add per element, a carry per row). */
TMLR_HOT void transpose(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    int32_t stride[4], dims[4], at[4] = {0, 0, 0, 0};
    int32_t in_stride = 1;
    for (int32_t d = l->ndim - 1; d >= 0; d--) {
        stride[d] = in_stride; /* the input's own strides, then read through perm */
        in_stride *= l->dims[d];
    }
    int32_t src = 0;
    for (int32_t d = 0; d < l->ndim; d++) {
        dims[d] = l->dims[l->perm[d]];
    }
    for (int32_t o = 0; o < l->size; o++) {
        y[o] = x[src];
        for (int32_t d = l->ndim - 1; d >= 0; d--) {
            const int32_t s = stride[l->perm[d]];
            src += s;
            if (++at[d] < dims[d]) {
                break;
            }
            src -= s * dims[d];
            at[d] = 0;
        }
    }
}

/* One layer of the net, its input and output in the arena. */
static tmlr_status run_layer(const tmlr_net *net, const tmlr_layer *l)
{
    int8_t *arena = net->arena;
    const int8_t *x = arena + l->in0;
    int8_t *y = arena + l->out;
    if ((l->op == TMLR_LAYER_CONV && (l->in_c / l->group) * l->kh * l->kw > TMLR_MODEL_MAX_COL) ||
        (l->op == TMLR_LAYER_FC && l->in_c > TMLR_MODEL_MAX_COL)) {
        return TMLR_ERR_ARG; /* a column longer than the scratch: the model source's #error names the flag */
    }
    switch (l->op) {
    case TMLR_LAYER_CONV:
        conv(l, x, y);
#ifdef TMLR_FAULT_HWC_OUTPUT
        /* faulty build: the convolution's output stored channels-last (HWC) where the next layer reads CHW, as a
         * kernel written for the other layout does: the right values in the wrong places */
        {
            static int8_t hwc[16384];
            const int32_t hw = l->out_h * l->out_w;
            if (l->size <= (int32_t)sizeof hwc) {
                for (int32_t c = 0; c < l->out_c; c++) {
                    for (int32_t q = 0; q < hw; q++) {
                        hwc[q * l->out_c + c] = y[c * hw + q];
                    }
                }
                memcpy(y, hwc, (size_t)l->size);
            }
        }
#endif
        break;
    case TMLR_LAYER_FC:
        fc(l, x, y);
        break;
    case TMLR_LAYER_AVGPOOL:
    case TMLR_LAYER_MAXPOOL:
    case TMLR_LAYER_AVGPOOL_TFLM:
        pool(l, x, y);
        break;
    case TMLR_LAYER_REQUANT:
        for (int32_t k = 0; k < l->size; k++) {
            const int32_t acc = (int32_t)x[k] - l->in_zp;
            requantize_out(l, 0, &acc, 1, y + k);
        }
        break;
    case TMLR_LAYER_ADD:
        add(l, x, arena + l->in1, y);
        break;
    case TMLR_LAYER_SOFTMAX: {
        const tmlr_status st = tmlr_softmax_s8(x, l->in_c, l->in_w, l->sm_mult, l->sm_shift, l->sm_diff_min, y);
        if (st != TMLR_OK) {
            return st;
        }
        break;
    }
    case TMLR_LAYER_TRANSPOSE:
        transpose(l, x, y);
        break;
    case TMLR_LAYER_RESHAPE:
        if (x != y) {
            memmove(y, x, (size_t)l->size);
        }
        break;
    default:
        return TMLR_ERR_ARG;
    }
    return TMLR_OK;
}

tmlr_status tmlr_net_run_hooked(const tmlr_net *net, const int8_t *input, int8_t *output, tmlr_layer_hook hook,
                                void *hook_ctx)
{
    if (net == NULL || input == NULL || output == NULL) {
        return TMLR_ERR_ARG;
    }
    memcpy(net->arena + net->input_offset, input, (size_t)net->input_size);
    for (int32_t i = 0; i < net->num_layers; i++) {
        const tmlr_layer *l = &net->layers[i];
        const tmlr_status st = run_layer(net, l);
        if (st != TMLR_OK) {
            return st;
        }
        if (hook != NULL) {
            hook(hook_ctx, i, net->arena + l->out, l->size);
        }
    }
    memcpy(output, net->arena + net->output_offset, (size_t)net->output_size);
    return TMLR_OK;
}

tmlr_status tmlr_net_run(const tmlr_net *net, const int8_t *input, int8_t *output)
{
    return tmlr_net_run_hooked(net, input, output, NULL, NULL);
}
