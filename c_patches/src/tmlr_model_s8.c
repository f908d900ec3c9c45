/* The reference device's int8 layers; Python twin: repair/program/ir.py. */
#include <string.h>

#include "tmlr_fixedpoint.h"
#include "tmlr_model.h"

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
#define TMLR_MODEL_REQUANTIZE faulty_requantize
#else
#define TMLR_MODEL_REQUANTIZE tmlr_requantize
#endif

static int8_t finish(int32_t acc, const tmlr_layer *l, int32_t c)
{
    const int32_t i = l->per_channel ? c : 0;
#ifdef TMLR_FAULT_ACC16
    /* faulty build: a 16-bit saturating accumulator, as a kernel that accumulates in int16 lanes */
    acc = acc > 32767 ? 32767 : (acc < -32768 ? -32768 : acc);
#endif
#ifdef TMLR_FAULT_SHIFT_BY_ONE
    /* faulty build: the requantization's shift one too large (a multiplier/shift decoded off by one): output ×2 */
    int32_t y = TMLR_MODEL_REQUANTIZE(acc, l->mult[i], l->shift[i] + 1) + l->out_zp;
#else
    int32_t y = TMLR_MODEL_REQUANTIZE(acc, l->mult[i], l->shift[i]) + l->out_zp;
#endif
#ifdef TMLR_FAULT_OUTPUT_ZERO_POINT
    y += 3; /* faulty build: an output zero point read off by 3 (a stale or mis-parsed quantization parameter) */
#endif
#ifdef TMLR_FAULT_ACTIVATION_RANGE
    /* faulty build: a clamp at zero point + 48 (a ReLU6-style range where the model has a plain ReLU) */
    const int32_t act_max = l->act_max < l->out_zp + 48 ? l->act_max : l->out_zp + 48;
#else
    const int32_t act_max = l->act_max;
#endif
    if (y < l->act_min) {
        y = l->act_min;
    }
    if (y > act_max) {
        y = act_max;
    }
    return (int8_t)y;
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

static void conv_pointwise(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int32_t hw = l->in_h * l->in_w;
    for (int32_t oc = 0; oc < l->out_c; oc++) {
        const int8_t *w = l->weights + (size_t)oc * (size_t)l->in_c;
        for (int32_t p = 0; p < hw; p++) {
            int32_t acc = l->bias[oc];
            const int8_t *xp = x + p;
            for (int32_t ic = 0; ic < l->in_c; ic++) {
                acc += ((int32_t)*xp - l->in_zp) * (int32_t)w[ic];
                xp += hw;
            }
            y[oc * hw + p] = finish(acc, l, oc);
        }
    }
}

static void conv(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    if (l->kh == 1 && l->kw == 1 && l->sh == 1 && l->sw == 1 && l->pad_t == 0 && l->pad_l == 0 && l->group == 1 &&
        l->out_h == l->in_h && l->out_w == l->in_w) {
        conv_pointwise(l, x, y);
        return;
    }
    const int32_t cin_g = l->in_c / l->group, cout_g = l->out_c / l->group;
    const int32_t taps = l->kh * l->kw;
    for (int32_t oc = 0; oc < l->out_c; oc++) {
        const int32_t g = oc / cout_g;
#ifdef TMLR_FAULT_DEPTHWISE_ORDER
        /* A deliberately faulty build (tests of `tmlrepair diagnose`): a depthwise kernel that reads its weights in
         * reversed channel order, as a layout mix-up between NHWC and NCHW weights does. */
        const int32_t wc_index = (cin_g == 1 && l->group > 1) ? l->out_c - 1 - oc : oc;
        const int8_t *w = l->weights + (size_t)wc_index * (size_t)(cin_g * taps);
#else
        const int8_t *w = l->weights + (size_t)oc * (size_t)(cin_g * taps);
#endif
        const int8_t *xg = x + (size_t)(g * cin_g) * (size_t)(l->in_h * l->in_w);
        for (int32_t oy = 0; oy < l->out_h; oy++) {
            const int32_t iy0 = oy * l->sh - l->pad_t;
            int32_t ky_lo, ky_hi;
            valid_taps(iy0, l->dh, l->kh, l->in_h, &ky_lo, &ky_hi);
            for (int32_t ox = 0; ox < l->out_w; ox++) {
                const int32_t ix0 = ox * l->sw - l->pad_l;
                int32_t kx_lo, kx_hi;
                valid_taps(ix0, l->dw, l->kw, l->in_w, &kx_lo, &kx_hi);
                int32_t acc = l->bias[oc];
                for (int32_t ic = 0; ic < cin_g; ic++) {
                    const int8_t *xc = xg + (size_t)ic * (size_t)(l->in_h * l->in_w);
                    const int8_t *wc = w + (size_t)ic * (size_t)taps;
                    for (int32_t ky = ky_lo; ky < ky_hi; ky++) {
                        const int8_t *xp = xc + (iy0 + ky * l->dh) * l->in_w + ix0 + kx_lo * l->dw;
                        const int8_t *wp = wc + ky * l->kw + kx_lo;
                        for (int32_t kx = kx_lo; kx < kx_hi; kx++) {
                            acc += ((int32_t)*xp - l->in_zp) * (int32_t)*wp++;
                            xp += l->dw;
                        }
                    }
                }
                y[(oc * l->out_h + oy) * l->out_w + ox] = finish(acc, l, oc);
            }
        }
    }
}

static void fc(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    for (int32_t o = 0; o < l->out_c; o++) {
        const int8_t *w = l->weights + (size_t)o * (size_t)l->in_c;
        int32_t acc = l->bias[o];
        for (int32_t i = 0; i < l->in_c; i++) {
            acc += ((int32_t)x[i] - l->in_zp) * (int32_t)w[i];
        }
        y[o] = finish(acc, l, o);
    }
}

static void pool(const tmlr_layer *l, const int8_t *x, int8_t *y, int is_max)
{
    for (int32_t c = 0; c < l->out_c; c++) {
        const int8_t *xc = x + (size_t)c * (size_t)(l->in_h * l->in_w);
        for (int32_t oy = 0; oy < l->out_h; oy++) {
            for (int32_t ox = 0; ox < l->out_w; ox++) {
                int32_t acc = is_max ? -128 : 0;
                for (int32_t ky = 0; ky < l->kh; ky++) {
                    for (int32_t kx = 0; kx < l->kw; kx++) {
                        const int32_t v = xc[(oy * l->sh + ky) * l->in_w + ox * l->sw + kx];
                        if (is_max) {
                            acc = v > acc ? v : acc;
                        } else {
#ifdef TMLR_FAULT_AVGPOOL_ZERO_POINT
                            acc += v; /* faulty build: TFLM's raw sum where this layer needs the zero point taken off */
#else
                            acc += v - l->in_zp;
#endif
                        }
                    }
                }
                y[(c * l->out_h + oy) * l->out_w + ox] = finish(is_max ? acc - l->in_zp : acc, l, 0);
            }
        }
    }
}

/* TFLM's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool, CMSIS-NN arm_avgpool_s8): the raw int8 values
 * summed (the zero point is not subtracted: input and output share scale and zero point), then divided by the
 * window size rounding half away from zero with C truncation, and clamped to the activation range. */
static void avgpool_tflm(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int32_t count = l->kh * l->kw;
    for (int32_t c = 0; c < l->out_c; c++) {
        const int8_t *xc = x + (size_t)c * (size_t)(l->in_h * l->in_w);
        for (int32_t oy = 0; oy < l->out_h; oy++) {
            for (int32_t ox = 0; ox < l->out_w; ox++) {
                int32_t acc = 0;
                for (int32_t ky = 0; ky < l->kh; ky++) {
                    for (int32_t kx = 0; kx < l->kw; kx++) {
                        acc += xc[(oy * l->sh + ky) * l->in_w + ox * l->sw + kx];
                    }
                }
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                acc = acc < l->act_min ? l->act_min : (acc > l->act_max ? l->act_max : acc);
                y[(c * l->out_h + oy) * l->out_w + ox] = (int8_t)acc;
            }
        }
    }
}

static void add(const tmlr_layer *l, const int8_t *a, const int8_t *b, int8_t *y)
{
    for (int32_t i = 0; i < l->size; i++) {
        const int32_t xa = tmlr_requantize(((int32_t)a[i] - l->in_zp) * (1 << 20), l->mult1, l->shift1);
        const int32_t xb = tmlr_requantize(((int32_t)b[i] - l->in1_zp) * (1 << 20), l->mult2, l->shift2);
        y[i] = finish(xa + xb, l, 0);
    }
}

static void transpose(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    int32_t stride[4] = {1, 1, 1, 1}, out_dims[4] = {1, 1, 1, 1}, in_stride[4] = {0, 0, 0, 0};
    for (int32_t d = l->ndim - 2; d >= 0; d--) {
        stride[d] = stride[d + 1] * l->dims[d + 1];
    }
    for (int32_t d = 0; d < l->ndim; d++) {
        out_dims[d] = l->dims[l->perm[d]];
        in_stride[d] = stride[l->perm[d]];
    }
    int32_t o = 0;
    for (int32_t a = 0; a < out_dims[0]; a++) {
        for (int32_t b = 0; b < out_dims[1]; b++) {
            for (int32_t c = 0; c < out_dims[2]; c++) {
                for (int32_t d = 0; d < out_dims[3]; d++) {
                    y[o++] = x[a * in_stride[0] + b * in_stride[1] + c * in_stride[2] + d * in_stride[3]];
                }
            }
        }
    }
}

/* One layer of the net, its input and output in the arena. */
static tmlr_status run_layer(const tmlr_net *net, const tmlr_layer *l)
{
    int8_t *arena = net->arena;
    const int8_t *x = arena + l->in0;
    int8_t *y = arena + l->out;
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
        pool(l, x, y, l->op == TMLR_LAYER_MAXPOOL);
        break;
    case TMLR_LAYER_REQUANT:
        for (int32_t k = 0; k < l->size; k++) {
            y[k] = finish((int32_t)x[k] - l->in_zp, l, 0);
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
    case TMLR_LAYER_AVGPOOL_TFLM:
        avgpool_tflm(l, x, y);
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

tmlr_status tmlr_net_run(const tmlr_net *net, const int8_t *input, int8_t *output)
{
    if (net == NULL || input == NULL || output == NULL) {
        return TMLR_ERR_ARG;
    }
    memcpy(net->arena + net->input_offset, input, (size_t)net->input_size);
    for (int32_t i = 0; i < net->num_layers; i++) {
        const tmlr_status st = run_layer(net, &net->layers[i]);
        if (st != TMLR_OK) {
            return st;
        }
    }
    memcpy(output, net->arena + net->output_offset, (size_t)net->output_size);
    return TMLR_OK;
}

/* Its own loop, not tmlr_net_run's with a hook check: measured on the Cortex-M4 build (-Os, digits, QEMU), one
 * shared loop costs 6% more instructions per normal inference (5.89 M against 5.55 M): GCC then inlines the layer
 * dispatch and the kernels differently. */
tmlr_status tmlr_net_run_hooked(const tmlr_net *net, const int8_t *input, int8_t *output, tmlr_layer_hook hook,
                                void *hook_ctx)
{
    if (net == NULL || input == NULL || output == NULL || hook == NULL) {
        return TMLR_ERR_ARG;
    }
    memcpy(net->arena + net->input_offset, input, (size_t)net->input_size);
    for (int32_t i = 0; i < net->num_layers; i++) {
        const tmlr_layer *l = &net->layers[i];
        const tmlr_status st = run_layer(net, l);
        if (st != TMLR_OK) {
            return st;
        }
        hook(hook_ctx, i, net->arena + l->out, l->size);
    }
    memcpy(output, net->arena + net->output_offset, (size_t)net->output_size);
    return TMLR_OK;
}
