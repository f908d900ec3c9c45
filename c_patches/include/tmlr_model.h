/*
 * tmlrepair reference device: an int8 model as a table of layers over one arena, run with integer arithmetic
 * only (TFLite Micro / CMSIS-NN conventions: int32 accumulators, per-channel Q0.31 multiplier + shift, zero
 * points, fused ReLU/Clip as an output range). Written by `repair.codegen.model_c` from an int8 ONNX model;
 * its Python twin is repair/program/ir.py, bit for bit. No malloc, no float.
 */
#ifndef TMLR_MODEL_H
#define TMLR_MODEL_H

#include <stdint.h>

#include "tmlr.h"

/* The kernels' im2col scratch, in int16 values: a model needs its longest column (a convolution's input channels
 * per group x kernel taps, a fully connected layer's inputs) to fit, and runs four output pixels at a time where
 * five such columns fit. A model source that needs more says so (#error) and builds with -DTMLR_MODEL_MAX_COL=n. */
#ifndef TMLR_MODEL_MAX_COL
#define TMLR_MODEL_MAX_COL 1024
#endif

typedef enum {
    TMLR_LAYER_CONV = 1,      /* NCHW (1-D: H = 1), grouped/depthwise via group */
    TMLR_LAYER_FC = 2,        /* weights (out, in) */
    TMLR_LAYER_AVGPOOL = 3,   /* no padding */
    TMLR_LAYER_MAXPOOL = 4,
    TMLR_LAYER_REQUANT = 5,   /* change of scale / standalone ReLU */
    TMLR_LAYER_ADD = 6,       /* TFLM int8 Add, equal shapes */
    TMLR_LAYER_SOFTMAX = 7,   /* over the last axis (rows of out_w) */
    TMLR_LAYER_TRANSPOSE = 8, /* up to 4 axes */
    TMLR_LAYER_RESHAPE = 9,   /* a copy when the arena offsets differ */
    TMLR_LAYER_AVGPOOL_TFLM = 10 /* TFLM AVERAGE_POOL_2D: equal in/out quantization, raw sum / count rounded */
} tmlr_layer_op;

typedef struct {
    uint8_t op;
    uint32_t in0, in1, out;                 /* byte offsets of the tensors in the arena */
    int32_t in_c, in_h, in_w;               /* conv/pool input; fc: in_c = depth; softmax: rows, in_w = row */
    int32_t out_c, out_h, out_w;
    int32_t kh, kw, sh, sw, dh, dw, pad_t, pad_l, group;
    const int8_t *weights;                  /* conv: (out_c, in_c/group, kh, kw); fc: (out_c, in_c) */
    const int32_t *bias;                    /* out_c values in accumulator units (s_x s_w) */
    const int32_t *mult;                    /* Q0.31 multipliers: out_c of them, or 1 */
    const int32_t *shift;                   /* their shifts in [-31, 30] (positive = left) */
    int32_t per_channel;                    /* 1 if mult/shift have out_c entries */
    int32_t in_zp, in1_zp, out_zp, act_min, act_max;
    int32_t mult1, shift1, mult2, shift2;   /* add: input rescales */
    int32_t sm_mult, sm_shift, sm_diff_min; /* softmax */
    int32_t ndim;                           /* transpose: input dims and the permutation */
    int32_t dims[4], perm[4];
    int32_t size;                           /* elements of the output */
} tmlr_layer;

typedef struct {
    const tmlr_layer *layers;
    int32_t num_layers;
    int8_t *arena;
    uint32_t input_offset, output_offset;
    int32_t input_size, output_size;
} tmlr_net;

/* Copy input into the arena, run every layer, copy the output out. */
tmlr_status tmlr_net_run(const tmlr_net *net, const int8_t *input, int8_t *output);

/* Called after each layer with its index and its output bytes (for on-device diagnosis: the device digests
 * every layer's output so the host can find the first layer that differs from the integer program). */
typedef void (*tmlr_layer_hook)(void *ctx, int32_t layer, const int8_t *data, int32_t size);

/* tmlr_net_run, calling hook (when not NULL) after every layer. */
tmlr_status tmlr_net_run_hooked(const tmlr_net *net, const int8_t *input, int8_t *output, tmlr_layer_hook hook,
                                void *hook_ctx);

#endif /* TMLR_MODEL_H */
