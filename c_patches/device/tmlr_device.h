/*
 * tmlrepair device harness: the serial protocol that lets `tmlrepair calibrate` and `validate` drive a board.
 *
 * Wire format (docs/protocol.md): every message is COBS( cmd u8 | seq u8 | payload | crc16 le ) 0x00, with
 * CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over cmd, seq and payload. A reply carries cmd | 0x80 and the
 * request's seq; an error carries TMLR_CMD_ERROR. A 0x00 byte always ends a frame, so the device resynchronises
 * on any delimiter after garbage. The last request and its reply are remembered: a retransmitted request (same
 * cmd, seq and CRC) gets the same reply again without being executed twice.
 *
 * Integration: feed every received byte to tmlr_device_rx(); it answers through tmlr_port_write(). Give it the
 * model with a tmlr_model (or NULL for shim-only firmware). No malloc; all buffers live in tmlr_device.
 */
#ifndef TMLR_DEVICE_H
#define TMLR_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "tmlr.h"

#define TMLR_PROTOCOL_VERSION 1

#ifndef TMLR_DEV_MAX_PAYLOAD
#define TMLR_DEV_MAX_PAYLOAD 2048 /* largest request or reply payload, bytes */
#endif
#ifndef TMLR_DEV_INFER_REPEAT
/* benchmark builds: INFER runs the model this many times and reports their ticks together (QEMU's SysTick counts
 * in steps of 40 instructions, coarse for a layer of a few hundred MACs) */
#define TMLR_DEV_INFER_REPEAT 1
#endif
#ifndef TMLR_DEV_MAX_CLASSES
#define TMLR_DEV_MAX_CLASSES 256
#endif
#ifndef TMLR_DEV_MAX_WINDOW
#define TMLR_DEV_MAX_WINDOW 1024
#endif
#ifndef TMLR_DEV_MAX_RING /* keyword recognizer: results in one averaging window, and their bytes (x classes) */
#define TMLR_DEV_MAX_RING 256
#endif
#ifndef TMLR_DEV_MAX_RING_BYTES
#define TMLR_DEV_MAX_RING_BYTES 4096
#endif
#ifndef TMLR_DEV_MAX_TENSOR
#define TMLR_DEV_MAX_TENSOR 4096 /* largest model input or output, bytes (the tool's builds set it per model) */
#endif

#define TMLR_DEV_FRAME_MAX (TMLR_DEV_MAX_PAYLOAD + 4)
#define TMLR_DEV_ENCODED_MAX (TMLR_DEV_FRAME_MAX + TMLR_DEV_FRAME_MAX / 254 + 2)

enum tmlr_command {
    TMLR_CMD_HELLO = 0x01,      /* -> versions, capabilities, model I/O, limits */
    TMLR_CMD_SET_PARAMS = 0x02, /* shim parameters into RAM */
    TMLR_CMD_INFER = 0x03,      /* input -> raw output, corrected output, counter delta (needs a model) */
    TMLR_CMD_SHIM = 0x04,       /* raw outputs -> corrected outputs, batched */
    TMLR_CMD_BENCH = 0x05,      /* run the shim chain k times on one sample, return counter ticks */
    TMLR_CMD_RESET = 0x06,      /* 0 [u32 pos]: clear shim state, next sample is pos; 1: forget parameters; 2: reboot */
    TMLR_CMD_LOAD = 0x07,       /* u32 offset, bytes: part of a model input larger than one frame, staged for INFER */
    TMLR_CMD_PROBE = 0x08,      /* input (or its CRC, staged) -> per layer: CRC-16, min, max of its output */
    TMLR_CMD_READ = 0x09,       /* u16 layer, u32 offset, input (or its CRC) -> that layer's output bytes from offset */
    TMLR_CMD_ERROR = 0x7F
};

enum tmlr_error {
    TMLR_E_UNKNOWN_COMMAND = 1,
    TMLR_E_BAD_LENGTH = 2,   /* payload length does not match the command */
    TMLR_E_OVERFLOW = 3,     /* frame longer than TMLR_DEV_ENCODED_MAX */
    TMLR_E_FRAMING = 4,      /* COBS decoding failed or frame shorter than 4 bytes */
    TMLR_E_CRC = 5,          /* CRC mismatch: the host should retransmit */
    TMLR_E_NO_PARAMS = 6,    /* SHIM/INFER/BENCH before SET_PARAMS (or after a reset) */
    TMLR_E_NO_MODEL = 7,     /* INFER on shim-only firmware */
    TMLR_E_STREAM_POS = 8,   /* stateful shim: the sample position is not the one expected (detail = expected) */
    TMLR_E_BAD_PARAMS = 9,   /* SET_PARAMS outside the shims' documented ranges */
    TMLR_E_MODEL_FAILED = 10, /* the model hook returned nonzero (detail = its code) */
    TMLR_E_FAULT = 11,        /* the CPU faulted (detail = the faulting PC); the device restarts */
    TMLR_E_STAGE = 12         /* INFER of a staged input whose CRC is not the host's (a restart lost it): LOAD again */
};

enum tmlr_shim_kind { TMLR_SHIM_CLASSIFIER = 1, TMLR_SHIM_THRESHOLD = 2, TMLR_SHIM_WINDOW = 3, TMLR_SHIM_RECOGNIZER = 4 };

#define TMLR_CAP_SHIM 0x1u  /* SHIM, SET_PARAMS, BENCH */
#define TMLR_CAP_MODEL 0x2u /* INFER */
#define TMLR_CAP_LOAD 0x4u  /* LOAD: inputs larger than one frame */
#define TMLR_CAP_PROBE 0x8u /* PROBE: per-layer digests */
#define TMLR_CAP_PRE_SHIM 0x10u /* INFER takes raw int16 readings through the model's input pre-shim */
#ifndef TMLR_DEV_MAX_RAW
#define TMLR_DEV_MAX_RAW 256 /* raw readings one INFER takes through the pre-shim */
#endif

/* The model the device runs (issue: the device runs the model). invoke returns 0 on success. */
typedef struct {
    uint8_t in_ndim, out_ndim;
    uint16_t in_dims[4], out_dims[4];
    uint32_t in_size, out_size; /* bytes of int8 */
    uint32_t in_scale_bits;     /* IEEE-754 binary32 bit pattern, reported to the host, never computed with */
    int32_t in_zero_point;
    uint32_t out_scale_bits;
    int32_t out_zero_point;
    int32_t (*invoke)(void *ctx, const int8_t *input, int8_t *output);
    void *ctx;
    /* Optional (PROBE): invoke, calling hook(hook_ctx, layer, output bytes, size) after every layer. A TFLM
     * firmware can give it by running the interpreter with preserved tensors and walking the operators. */
    int32_t (*probe)(void *ctx, const int8_t *input, int8_t *output,
                     void (*hook)(void *hook_ctx, int32_t layer, const int8_t *data, int32_t size), void *hook_ctx);
    int32_t num_layers;
    /* Optional: the input pre-shim (tmlr_input_pre_shim_s16, features last), so INFER can take the sensor's int16
     * readings (2 bytes per input) and quantize them on the device; NULL multipliers: none. */
    const int32_t *pre_mult, *pre_shift, *pre_offset;
} tmlr_model;

typedef struct {
    uint32_t params_id; /* the host's id of the uploaded parameters; 0 = none */
    uint8_t kind;
    uint8_t has_affine, has_thresholds, probabilities_in; /* probabilities_in: the model ends in its Softmax */
    int32_t num_classes;
    int32_t sm_mult, sm_shift, sm_diff_min;
    int32_t in_zp, out_zp;
    int32_t mult[TMLR_DEV_MAX_CLASSES], shift[TMLR_DEV_MAX_CLASSES], offset[TMLR_DEV_MAX_CLASSES];
    int8_t thresholds[TMLR_DEV_MAX_CLASSES];
    int32_t threshold_q;
    uint8_t has_score;   /* anomaly kinds: INFER computes the reconstruction score (in_zp, out_zp its zero points) */
    int32_t score_size, score_mult[3], score_shift;
    tmlr_window_s16 window;
    int16_t ring[TMLR_DEV_MAX_WINDOW];
    tmlr_recognizer_s8 recognizer; /* the keyword stream: rings of results within one averaging window */
    int8_t recognizer_scores[TMLR_DEV_MAX_RING_BYTES];
    int32_t recognizer_times[TMLR_DEV_MAX_RING];
    uint32_t stream_pos; /* samples the stateful shim has consumed since its state was cleared */
} tmlr_shim_params;

typedef struct {
    const tmlr_model *model;
    tmlr_shim_params shim;
    uint8_t rx[TMLR_DEV_ENCODED_MAX];
    uint32_t rx_len;
    uint8_t rx_overflow;
    uint8_t frame[TMLR_DEV_FRAME_MAX];
    uint8_t reply[TMLR_DEV_FRAME_MAX];
    uint8_t tx[TMLR_DEV_ENCODED_MAX + 1];
    uint32_t tx_len;
    /* the last request executed, to answer a retransmission from tx without executing it again */
    uint8_t last_valid, last_cmd, last_seq;
    uint16_t last_crc;
    int8_t tensor_in[TMLR_DEV_MAX_TENSOR], tensor_out[TMLR_DEV_MAX_TENSOR];
    int16_t raw_in[TMLR_DEV_MAX_RAW]; /* raw readings of an INFER through the input pre-shim */
    uint8_t reboot_pending;
} tmlr_device;

/* Start (or restart) the device: no parameters, empty buffers. model may be NULL (shim-only). */
void tmlr_device_init(tmlr_device *dev, const tmlr_model *model);

/* Take one received byte; a 0x00 completes a frame, which is executed and answered. */
void tmlr_device_rx(tmlr_device *dev, uint8_t byte);

/* For a fault handler: send TMLR_E_FAULT with the faulting address (the port then restarts the device). */
void tmlr_device_report_fault(uint32_t pc);

#endif /* TMLR_DEVICE_H */
