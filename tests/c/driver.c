/*
 * Test driver: one command per input line, one result line per command (stdin -> stdout).
 * Lets tests/test_c_shims.py compare every shim with its Python twin on many vectors in one process.
 *
 *   mul A B | divpot X E | requant X M S | requantr X M R | exp A | oneover X
 *   softmax8 ROWS COLS MULT SHIFT DIFFMIN v... | softmax16 (same)
 *   affine ROWS K INZP OUTZP m[K] s[K] o[K] v[ROWS*K]
 *   decide K t[K] s[K]
 *   window N A2 F LEN v[LEN]
 *   preshim ROWS F ZP m[F] s[F] o[F] v[ROWS*F]
 *   recon ROWS N INZP OUTZP MEE MEF MFF SHIFT in[ROWS*N] out[ROWS*N]
 *   recog K CAP WIN THR SUPP MINC SIL LEN t[LEN] s[LEN*K]   (per step: label score fired, or sN)
 */
#include <stdio.h>
#include <string.h>

#include "tmlr.h"
#include "tmlr_fixedpoint.h"

#define MAXV 65536

static long rd(void)
{
    long v = 0;
    if (scanf("%ld", &v) != 1) {
        fprintf(stderr, "driver: expected a number\n");
    }
    return v;
}

static int8_t in8[MAXV];
static int8_t out8[MAXV];
static int16_t out16[MAXV];
static int16_t ring[1024];
static int16_t in16[MAXV];
static int32_t m[256], s[256], o[256];

static void fail(tmlr_status st)
{
    printf("status %d\n", (int)st);
}

/* n values on one line; out16 when wide, else out8 */
static void print_out(int32_t n, int wide)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        printf(i ? " %d" : "%d", wide ? (int)out16[i] : (int)out8[i]);
    }
    printf("\n");
}

int main(void)
{
    char op[32];
    (void)setvbuf(stdout, NULL, _IOLBF, 0); /* a line per answer, also on a pipe: a test can talk to it */
    while (scanf("%31s", op) == 1) {
        if (strcmp(op, "mul") == 0) {
            const int32_t a = (int32_t)rd();
            const int32_t b = (int32_t)rd();
            printf("%ld\n", (long)tmlr_mul_sat_q31(a, b));
        } else if (strcmp(op, "divpot") == 0) {
            const int32_t x = (int32_t)rd();
            const int32_t e = (int32_t)rd();
            printf("%ld\n", (long)tmlr_div_pot_q31(x, e));
        } else if (strcmp(op, "requant") == 0) {
            const int32_t x = (int32_t)rd();
            const int32_t mm = (int32_t)rd();
            const int32_t ss = (int32_t)rd();
            printf("%ld\n", (long)tmlr_requantize(x, mm, ss));
        } else if (strcmp(op, "requantr") == 0) {
            const int32_t x = (int32_t)rd();
            const int32_t mm = (int32_t)rd();
            const int32_t rr = (int32_t)rd();
            printf("%ld\n", (long)tmlr_requantize_right(x, mm, rr, tmlr_requant_nudge(rr)));
        } else if (strcmp(op, "exp") == 0) {
            printf("%ld\n", (long)tmlr_exp_on_negative_values((int32_t)rd()));
        } else if (strcmp(op, "oneover") == 0) {
            printf("%ld\n", (long)tmlr_one_over_one_plus_x((int32_t)rd()));
        } else if (strcmp(op, "softmax8") == 0 || strcmp(op, "softmax16") == 0) {
            const int32_t rows = (int32_t)rd();
            const int32_t cols = (int32_t)rd();
            const int32_t mult = (int32_t)rd();
            const int32_t shift = (int32_t)rd();
            const int32_t dmin = (int32_t)rd();
            const int32_t n = rows * cols;
            int32_t i;
            tmlr_status st;
            for (i = 0; i < n; ++i) {
                in8[i] = (int8_t)rd();
            }
            if (op[7] == '8') {
                st = tmlr_softmax_s8(in8, rows, cols, mult, shift, dmin, out8);
            } else {
                st = tmlr_softmax_s8_s16(in8, rows, cols, mult, shift, dmin, out16);
            }
            if (st != TMLR_OK) {
                fail(st);
                continue;
            }
            print_out(n, op[7] != '8');
        } else if (strcmp(op, "affine") == 0) {
            const int32_t rows = (int32_t)rd();
            const int32_t k = (int32_t)rd();
            const int32_t inzp = (int32_t)rd();
            const int32_t outzp = (int32_t)rd();
            int32_t i;
            tmlr_status st;
            for (i = 0; i < k; ++i) m[i] = (int32_t)rd();
            for (i = 0; i < k; ++i) s[i] = (int32_t)rd();
            for (i = 0; i < k; ++i) o[i] = (int32_t)rd();
            for (i = 0; i < rows * k; ++i) in8[i] = (int8_t)rd();
            st = tmlr_class_affine_s8(in8, rows, k, inzp, m, s, o, outzp, out8);
            if (st != TMLR_OK) {
                fail(st);
                continue;
            }
            print_out(rows * k, 0);
        } else if (strcmp(op, "preshim") == 0) {
            const int32_t rows = (int32_t)rd();
            const int32_t k = (int32_t)rd();
            const int32_t zp = (int32_t)rd();
            int32_t i;
            tmlr_status st;
            for (i = 0; i < k; ++i) m[i] = (int32_t)rd();
            for (i = 0; i < k; ++i) s[i] = (int32_t)rd();
            for (i = 0; i < k; ++i) o[i] = (int32_t)rd();
            for (i = 0; i < rows * k; ++i) in16[i] = (int16_t)rd();
            st = tmlr_input_pre_shim_s16(in16, rows, k, m, s, o, zp, out8);
            if (st != TMLR_OK) {
                fail(st);
                continue;
            }
            print_out(rows * k, 0);
        } else if (strcmp(op, "decide") == 0) {
            const int32_t k = (int32_t)rd();
            int8_t th[256];
            int32_t i;
            int32_t d = 0;
            for (i = 0; i < k; ++i) th[i] = (int8_t)rd();
            for (i = 0; i < k; ++i) in8[i] = (int8_t)rd();
            if (tmlr_threshold_decide_s8(in8, k, th, &d) != TMLR_OK) {
                printf("status\n");
                continue;
            }
            printf("%ld\n", (long)d);
        } else if (strcmp(op, "window") == 0) {
            const int32_t n = (int32_t)rd();
            const int32_t a2 = (int32_t)rd();
            const int32_t f = (int32_t)rd();
            const int32_t len = (int32_t)rd();
            tmlr_window_s16 w;
            int32_t i;
            const tmlr_status st = tmlr_window_init_s16(&w, ring, n, a2, f);
            for (i = 0; i < len; ++i) {
                uint8_t alarm = 0;
                const int16_t x = (int16_t)rd();
                if (st == TMLR_OK) {
                    (void)tmlr_window_step_s16(&w, x, &alarm);
                }
                printf(i ? " %d" : "%d", (int)alarm);
            }
            printf("\n");
            if (st != TMLR_OK) {
                fail(st);
            }
        } else if (strcmp(op, "recon") == 0) {
            const int32_t rows = (int32_t)rd();
            const int32_t n = (int32_t)rd();
            const int32_t izp = (int32_t)rd();
            const int32_t ozp = (int32_t)rd();
            const int32_t mee = (int32_t)rd();
            const int32_t mef = (int32_t)rd();
            const int32_t mff = (int32_t)rd();
            const int32_t sh = (int32_t)rd();
            tmlr_status st = TMLR_OK;
            int32_t i;
            for (i = 0; i < rows * n; ++i) in8[i] = (int8_t)rd();
            for (i = 0; i < rows * n; ++i) out8[i] = (int8_t)rd();
            for (i = 0; i < rows && st == TMLR_OK; ++i) {
                st = tmlr_recon_score_s16(&in8[i * n], &out8[i * n], n, izp, ozp, mee, mef, mff, sh, &out16[i]);
            }
            if (st != TMLR_OK) {
                fail(st);
                continue;
            }
            for (i = 0; i < rows; ++i) printf(i ? " %d" : "%d", (int)out16[i]);
            printf("\n");
        } else if (strcmp(op, "recog") == 0) {
            static int32_t times[MAXV];
            static int32_t time_ring[4096];
            tmlr_recognizer_s8 r;
            const int32_t k = (int32_t)rd();
            const int32_t cap = (int32_t)rd();
            const int32_t win = (int32_t)rd();
            const int32_t thr = (int32_t)rd();
            const int32_t supp = (int32_t)rd();
            const int32_t minc = (int32_t)rd();
            const int32_t sil = (int32_t)rd();
            const int32_t len = (int32_t)rd();
            int32_t i;
            tmlr_status st;
            for (i = 0; i < len; ++i) times[i] = (int32_t)rd();
            for (i = 0; i < len * k; ++i) in8[i] = (int8_t)rd();
            st = cap > 4096 || cap * k > MAXV ? TMLR_ERR_RANGE
                                               : tmlr_recognizer_init_s8(&r, out8, time_ring, cap, k, win, thr, supp,
                                                                         minc, sil);
            if (st != TMLR_OK) {
                fail(st);
                continue;
            }
            for (i = 0; i < len; ++i) {
                int32_t label = 0;
                int32_t score = 0;
                uint8_t fired = 0;
                st = tmlr_recognizer_step_s8(&r, &in8[i * k], times[i], &label, &score, &fired);
                if (st != TMLR_OK) {
                    printf(i ? " s%d" : "s%d", (int)st);
                } else {
                    printf(i ? " %ld %ld %d" : "%ld %ld %d", (long)label, (long)score, (int)fired);
                }
            }
            printf("\n");
        } else {
            fprintf(stderr, "driver: unknown op %s\n", op);
            return 2;
        }
    }
    return 0;
}
