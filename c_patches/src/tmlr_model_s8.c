/* The reference device's int8 layers; Python twin: repair/intmodel/program.py. */
#include <string.h>

#include "tmlr_fixedpoint.h"
#include "tmlr_model.h"

static int8_t finish(int32_t acc, const tmlr_layer *l, int32_t c)
{
    const int32_t i = l->per_channel ? c : 0;
    int32_t y = tmlr_requantize(acc, l->mult[i], l->shift[i]) + l->out_zp;
    if (y < l->act_min) {
        y = l->act_min;
    }
    if (y > l->act_max) {
        y = l->act_max;
    }
    return (int8_t)y;
}

static void conv(const tmlr_layer *l, const int8_t *x, int8_t *y)
{
    const int32_t cin_g = l->in_c / l->group, cout_g = l->out_c / l->group;
    for (int32_t oc = 0; oc < l->out_c; oc++) {
        const int32_t g = oc / cout_g;
        const int8_t *w = l->weights + (size_t)oc * (size_t)(cin_g * l->kh * l->kw);
        for (int32_t oy = 0; oy < l->out_h; oy++) {
            for (int32_t ox = 0; ox < l->out_w; ox++) {
                int32_t acc = l->bias[oc];
                for (int32_t ic = 0; ic < cin_g; ic++) {
                    const int8_t *xc = x + (size_t)(g * cin_g + ic) * (size_t)(l->in_h * l->in_w);
                    const int8_t *wc = w + (size_t)ic * (size_t)(l->kh * l->kw);
                    for (int32_t ky = 0; ky < l->kh; ky++) {
                        const int32_t iy = oy * l->sh - l->pad_t + ky * l->dh;
                        if (iy < 0 || iy >= l->in_h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < l->kw; kx++) {
                            const int32_t ix = ox * l->sw - l->pad_l + kx * l->dw;
                            if (ix < 0 || ix >= l->in_w) {
                                continue;
                            }
                            acc += ((int32_t)xc[iy * l->in_w + ix] - l->in_zp) * (int32_t)wc[ky * l->kw + kx];
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
                            acc += v - l->in_zp;
                        }
                    }
                }
                y[(c * l->out_h + oy) * l->out_w + ox] = finish(is_max ? acc - l->in_zp : acc, l, 0);
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

tmlr_status tmlr_net_run(const tmlr_net *net, const int8_t *input, int8_t *output)
{
    if (net == NULL || input == NULL || output == NULL) {
        return TMLR_ERR_ARG;
    }
    int8_t *arena = net->arena;
    memcpy(arena + net->input_offset, input, (size_t)net->input_size);
    for (int32_t i = 0; i < net->num_layers; i++) {
        const tmlr_layer *l = &net->layers[i];
        const int8_t *x = arena + l->in0;
        int8_t *y = arena + l->out;
        switch (l->op) {
        case TMLR_LAYER_CONV:
            conv(l, x, y);
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
        case TMLR_LAYER_RESHAPE:
            if (x != y) {
                memmove(y, x, (size_t)l->size);
            }
            break;
        default:
            return TMLR_ERR_ARG;
        }
    }
    memcpy(output, arena + net->output_offset, (size_t)net->output_size);
    return TMLR_OK;
}
