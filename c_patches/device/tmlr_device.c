/* tmlrepair device harness: framing, dispatch and the shim chain. Host twin: repair/device/ (docs/protocol.md). */
#include <string.h>

#include "tmlr_device.h"
#include "tmlr_port.h"

/* ------------------------------------------------------------------ little-endian fields */

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int32_t get_i32(const uint8_t *p)
{
    const uint32_t u = get_u32(p);
    return (u & 0x80000000u) ? -(int32_t)(~u) - 1 : (int32_t)u; /* no implementation-defined conversion */
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ------------------------------------------------------------------ CRC-16/CCITT-FALSE and COBS */

static uint16_t crc16(const uint8_t *p, uint32_t n)
{
    uint32_t c = 0xFFFFu;
    while (n--) {
        c ^= (uint32_t)*p++ << 8;
        for (int i = 0; i < 8; i++) {
            c = (c & 0x8000u) ? ((c << 1) ^ 0x1021u) : (c << 1);
        }
        c &= 0xFFFFu;
    }
    return (uint16_t)c;
}

/* Encodes n bytes; out must hold n + n / 254 + 1 bytes. Returns the encoded length (no delimiter). */
static uint32_t cobs_encode(const uint8_t *in, uint32_t n, uint8_t *out)
{
    uint32_t code_at = 0, w = 1;
    uint8_t code = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = w++;
            code = 1;
        } else {
            out[w++] = in[i];
            if (++code == 0xFF) {
                out[code_at] = code;
                code_at = w++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return w;
}

/* Decodes into out (capacity cap). Returns the decoded length, or -1 on a malformed or oversized frame. */
static int32_t cobs_decode(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t cap)
{
    uint32_t r = 0, w = 0;
    while (r < n) {
        const uint8_t code = in[r++];
        if (code == 0) {
            return -1;
        }
        for (uint8_t i = 1; i < code; i++) {
            if (r >= n || w >= cap) {
                return -1;
            }
            out[w++] = in[r++];
        }
        if (code != 0xFF && r < n) {
            if (w >= cap) {
                return -1;
            }
            out[w++] = 0;
        }
    }
    return (int32_t)w;
}

/* ------------------------------------------------------------------ replies */

static void send_into(uint8_t *frame, uint32_t payload_len, uint8_t *tx, uint32_t *tx_len)
{
    const uint16_t c = crc16(frame, payload_len + 2u);
    put_u16(frame + 2 + payload_len, c);
    uint32_t m = cobs_encode(frame, payload_len + 4u, tx);
    tx[m++] = 0;
    *tx_len = m;
    tmlr_port_write(tx, m);
}

/* A reply to the request being executed: kept in dev->tx for retransmissions. */
static void reply(tmlr_device *dev, uint8_t cmd, uint8_t seq, uint32_t payload_len)
{
    dev->reply[0] = cmd;
    dev->reply[1] = seq;
    send_into(dev->reply, payload_len, dev->tx, &dev->tx_len);
}

static void reply_error(tmlr_device *dev, uint8_t seq, uint8_t code, uint8_t cmd, uint32_t detail)
{
    dev->reply[2] = code;
    dev->reply[3] = cmd;
    put_u32(dev->reply + 4, detail);
    reply(dev, TMLR_CMD_ERROR, seq, 6);
}

/* An error about the link itself (framing, CRC): not cached, so the last reply stays retransmittable. */
static void link_error(uint8_t seq, uint8_t code, uint32_t detail)
{
    uint8_t frame[10], tx[12];
    uint32_t n;
    frame[0] = TMLR_CMD_ERROR;
    frame[1] = seq;
    frame[2] = code;
    frame[3] = 0;
    put_u32(frame + 4, detail);
    send_into(frame, 6, tx, &n);
}

void tmlr_device_report_fault(uint32_t pc) { link_error(0, TMLR_E_FAULT, pc); }

/* ------------------------------------------------------------------ the shim chain */

/* Runs the uploaded chain on `count` samples of `in`, writing each sample's outputs to out.
 * Classifier: K int8 logits -> K int8 probabilities (+ decision as int16 le). Anomaly: int16 le score -> alarm u8. */
static tmlr_status run_shim(tmlr_shim_params *s, const uint8_t *in, uint32_t count, uint8_t *out)
{
    if (s->kind == TMLR_SHIM_CLASSIFIER) {
        const int32_t k = s->num_classes;
        int8_t scaled[TMLR_DEV_MAX_CLASSES];
        for (uint32_t i = 0; i < count; i++) {
            const int8_t *logits = (const int8_t *)(in + i * (uint32_t)k);
            int8_t *probs = (int8_t *)out;
            tmlr_status st = TMLR_OK;
            if (s->has_affine) {
                st = tmlr_class_affine_s8(logits, 1, k, s->in_zp, s->mult, s->shift, s->offset, s->out_zp, scaled);
                logits = scaled;
            }
            if (st == TMLR_OK && s->probabilities_in) {
                memmove(probs, logits, (size_t)k); /* the model ends in its own Softmax: its output is the input */
            } else if (st == TMLR_OK) {
                st = tmlr_softmax_s8(logits, 1, k, s->sm_mult, s->sm_shift, s->sm_diff_min, probs);
            }
            if (st != TMLR_OK) {
                return st;
            }
            out += k;
            if (s->has_thresholds) {
                int32_t decision = -1;
                st = tmlr_threshold_decide_s8(probs, k, s->thresholds, &decision);
                if (st != TMLR_OK) {
                    return st;
                }
                put_u16(out, (uint16_t)(decision & 0xFFFF));
                out += 2;
            }
        }
        return TMLR_OK;
    }
    if (s->kind == TMLR_SHIM_RECOGNIZER) {
        const uint32_t k = (uint32_t)s->num_classes;
        for (uint32_t i = 0; i < count; i++) {
            const uint8_t *row = in + i * (k + 4u);
            int32_t label = -1, score = 0;
            uint8_t fired = 0;
            const tmlr_status st = tmlr_recognizer_step_s8(&s->recognizer, (const int8_t *)row, get_i32(row + k),
                                                           &label, &score, &fired);
            if (st != TMLR_OK) {
                return st;
            }
            put_u16(out + 4 * i, (uint16_t)(label & 0xFFFF));
            out[4 * i + 2] = (uint8_t)score;
            out[4 * i + 3] = fired;
            s->stream_pos++;
        }
        return TMLR_OK;
    }
    for (uint32_t i = 0; i < count; i++) {
        const int16_t x = (int16_t)get_u16(in + 2 * i);
        if (s->kind == TMLR_SHIM_THRESHOLD) {
            out[i] = (uint8_t)(x > s->threshold_q);
        } else {
            const tmlr_status st = tmlr_window_step_s16(&s->window, x, &out[i]);
            if (st != TMLR_OK) {
                return st;
            }
            s->stream_pos++;
        }
    }
    return TMLR_OK;
}

static uint32_t shim_in_bytes(const tmlr_shim_params *s)
{
    if (s->kind == TMLR_SHIM_RECOGNIZER) {
        return (uint32_t)s->num_classes + 4u; /* int8 posteriors, i32 time in ms */
    }
    return s->kind == TMLR_SHIM_CLASSIFIER ? (uint32_t)s->num_classes : 2u;
}

static uint32_t shim_out_bytes(const tmlr_shim_params *s)
{
    if (s->kind == TMLR_SHIM_CLASSIFIER) {
        return (uint32_t)s->num_classes + (s->has_thresholds ? 2u : 0u);
    }
    return s->kind == TMLR_SHIM_RECOGNIZER ? 4u : 1u; /* recognizer: i16 label, u8 score, u8 new command */
}

static tmlr_status init_recognizer(tmlr_shim_params *s)
{
    tmlr_recognizer_s8 *r = &s->recognizer;
    return tmlr_recognizer_init_s8(r, s->recognizer_scores, s->recognizer_times, r->capacity, r->num_classes,
                                   r->window_ms, r->threshold, r->suppression_ms, r->min_count, r->silence_class);
}

static void clear_state(tmlr_shim_params *s)
{
    s->stream_pos = 0;
    if (s->kind == TMLR_SHIM_WINDOW) {
        (void)tmlr_window_init_s16(&s->window, s->ring, s->window.window, s->window.alpha2_q, s->window.frac_bits);
    } else if (s->kind == TMLR_SHIM_RECOGNIZER) {
        (void)init_recognizer(s);
    }
}

#define RECON_BLOCK 25u /* u32 size, i32 in_zp, i32 out_zp, 3 x i32 multipliers, u8 shift */

/* The reconstruction score's parameters (after an anomaly kind's own); checked by one dry run on a zero sample. */
static uint8_t parse_recon(tmlr_shim_params *s, const uint8_t *p)
{
    const int8_t zero = 0;
    int16_t score = 0;
    s->has_score = 1;
    s->score_size = (int32_t)get_u32(p);
    s->in_zp = get_i32(p + 4);
    s->out_zp = get_i32(p + 8);
    for (int i = 0; i < 3; i++) {
        s->score_mult[i] = get_i32(p + 12 + 4 * i);
    }
    s->score_shift = (int32_t)p[24];
    if (get_u32(p) < 1u || get_u32(p) > 32768u ||
        tmlr_recon_score_s16(&zero, &zero, 1, s->in_zp, s->out_zp, s->score_mult[0], s->score_mult[1],
                             s->score_mult[2], s->score_shift, &score) != TMLR_OK) {
        return TMLR_E_BAD_PARAMS;
    }
    return 0;
}

/* Parses SET_PARAMS into s; checks every value with one dry run of each shim. Returns 0 or TMLR_E_*. */
static uint8_t parse_params(tmlr_shim_params *s, const uint8_t *p, uint32_t n)
{
    if (n < 5) {
        return TMLR_E_BAD_LENGTH;
    }
    memset(s, 0, sizeof *s);
    const uint32_t id = get_u32(p);
    s->kind = p[4];
    p += 5;
    n -= 5;
    if (id == 0) {
        return TMLR_E_BAD_PARAMS;
    }
    if (s->kind == TMLR_SHIM_CLASSIFIER) {
        if (n < 15) {
            return TMLR_E_BAD_LENGTH;
        }
        const uint32_t k = get_u16(p);
        s->has_affine = (uint8_t)(p[2] & 1u);
        s->has_thresholds = (uint8_t)((p[2] >> 1) & 1u);
        s->probabilities_in = (uint8_t)((p[2] >> 2) & 1u);
        if (k < 1 || k > TMLR_DEV_MAX_CLASSES || p[2] > 7u || (s->probabilities_in && s->has_affine)) {
            return TMLR_E_BAD_PARAMS;
        }
        s->num_classes = (int32_t)k;
        s->sm_mult = get_i32(p + 3);
        s->sm_shift = get_i32(p + 7);
        s->sm_diff_min = get_i32(p + 11);
        p += 15;
        n -= 15;
        const uint32_t need = (s->has_affine ? 8u + 12u * k : 0u) + (s->has_thresholds ? k : 0u);
        if (n != need) {
            return TMLR_E_BAD_LENGTH;
        }
        if (s->has_affine) {
            s->in_zp = get_i32(p);
            s->out_zp = get_i32(p + 4);
            p += 8;
            for (uint32_t i = 0; i < k; i++) {
                s->mult[i] = get_i32(p + 4 * i);
                s->shift[i] = get_i32(p + 4 * (k + i));
                s->offset[i] = get_i32(p + 4 * (2 * k + i));
            }
            p += 12 * k;
        }
        if (s->has_thresholds) {
            memcpy(s->thresholds, p, k);
        }
        /* dry run on the extreme rows (all 0, all 127, all -128, one 127 among -128): the shims check their
         * parameters' ranges themselves, and these inputs reach the largest intermediate values */
        uint8_t row[TMLR_DEV_MAX_CLASSES], out[TMLR_DEV_MAX_CLASSES + 2];
        static const uint8_t fill[4] = {0x00u, 0x7Fu, 0x80u, 0x80u};
        for (uint32_t t = 0; t < 4u; t++) {
            memset(row, fill[t], k);
            row[0] = t == 3u ? 0x7Fu : row[0];
            if (run_shim(s, row, 1, out) != TMLR_OK) {
                return TMLR_E_BAD_PARAMS;
            }
        }
        return 0;
    }
    if (s->kind == TMLR_SHIM_RECOGNIZER) {
        /* u16 K, u16 capacity, i32 window_ms, u8 threshold, i32 suppression_ms, u16 min_count, i16 silence */
        if (n != 17) {
            return TMLR_E_BAD_LENGTH;
        }
        tmlr_recognizer_s8 *r = &s->recognizer;
        s->num_classes = (int32_t)get_u16(p);
        r->num_classes = s->num_classes;
        r->capacity = (int32_t)get_u16(p + 2);
        r->window_ms = get_i32(p + 4);
        r->threshold = (int32_t)p[8];
        r->suppression_ms = get_i32(p + 9);
        r->min_count = (int32_t)get_u16(p + 13);
        r->silence_class = (int32_t)(int16_t)get_u16(p + 15);
        if (r->capacity > TMLR_DEV_MAX_RING || (uint32_t)r->capacity * (uint32_t)r->num_classes > TMLR_DEV_MAX_RING_BYTES) {
            return TMLR_E_BAD_PARAMS;
        }
        return init_recognizer(s) == TMLR_OK ? 0 : TMLR_E_BAD_PARAMS;
    }
    if (s->kind == TMLR_SHIM_THRESHOLD || s->kind == TMLR_SHIM_WINDOW) {
        const uint32_t base = s->kind == TMLR_SHIM_THRESHOLD ? 4u : 7u;
        if (n != base && n != base + RECON_BLOCK) {
            return TMLR_E_BAD_LENGTH;
        }
        if (n == base + RECON_BLOCK) {
            const uint8_t err = parse_recon(s, p + base);
            if (err != 0) {
                return err;
            }
        }
        if (s->kind == TMLR_SHIM_THRESHOLD) {
            s->threshold_q = get_i32(p);
            return 0;
        }
        const int32_t window = (int32_t)get_u16(p);
        if (window > TMLR_DEV_MAX_WINDOW) {
            return TMLR_E_BAD_PARAMS;
        }
        return tmlr_window_init_s16(&s->window, s->ring, window, get_i32(p + 2), (int32_t)p[6]) == TMLR_OK
                   ? 0
                   : TMLR_E_BAD_PARAMS;
    }
    return TMLR_E_BAD_PARAMS;
}

/* ------------------------------------------------------------------ commands */

static void put_model(uint8_t *p, uint8_t ndim, const uint16_t *dims, uint32_t size, uint32_t scale_bits, int32_t zp)
{
    p[0] = ndim;
    for (int i = 0; i < 4; i++) {
        put_u16(p + 1 + 2 * i, dims[i]);
    }
    put_u32(p + 9, size);
    put_u32(p + 13, scale_bits);
    put_u32(p + 17, (uint32_t)zp);
}

static void cmd_hello(tmlr_device *dev, uint8_t seq)
{
    uint8_t *p = dev->reply + 2;
    memset(p, 0, 64);
    p[0] = TMLR_PROTOCOL_VERSION;
    put_u16(p + 1, (uint16_t)TMLR_VERSION);
    put_u32(p + 3, TMLR_CAP_SHIM | (dev->model ? TMLR_CAP_MODEL | TMLR_CAP_LOAD : 0u) |
                       (dev->model && dev->model->probe ? TMLR_CAP_PROBE : 0u) |
                       (dev->model && dev->model->pre_mult ? TMLR_CAP_PRE_SHIM : 0u));
    put_u16(p + 7, (uint16_t)TMLR_DEV_MAX_PAYLOAD);
    put_u32(p + 9, tmlr_port_counter_hz());
    put_u32(p + 13, dev->shim.params_id);
    p[17] = dev->shim.kind;
    put_u16(p + 18, (uint16_t)TMLR_DEV_MAX_CLASSES);
    put_u16(p + 20, (uint16_t)TMLR_DEV_MAX_WINDOW);
    if (dev->model) {
        const tmlr_model *m = dev->model;
        put_model(p + 22, m->in_ndim, m->in_dims, m->in_size, m->in_scale_bits, m->in_zero_point);
        put_model(p + 43, m->out_ndim, m->out_dims, m->out_size, m->out_scale_bits, m->out_zero_point);
    }
    const char *board = tmlr_port_board();
    uint32_t len = 0;
    while (board[len] != '\0' && len < 47) {
        p[65 + len] = (uint8_t)board[len];
        len++;
    }
    p[64] = (uint8_t)len;
    reply(dev, TMLR_CMD_HELLO | 0x80, seq, 65 + len);
}

static void cmd_shim(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    tmlr_shim_params *s = &dev->shim;
    if (s->params_id == 0) {
        reply_error(dev, seq, TMLR_E_NO_PARAMS, TMLR_CMD_SHIM, 0);
        return;
    }
    if (n < 6) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_SHIM, 0);
        return;
    }
    const uint32_t pos = get_u32(p), count = get_u16(p + 4);
    if (n != 6 + count * shim_in_bytes(s) || 6 + count * shim_out_bytes(s) > TMLR_DEV_MAX_PAYLOAD) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_SHIM, 0);
        return;
    }
    if ((s->kind == TMLR_SHIM_WINDOW || s->kind == TMLR_SHIM_RECOGNIZER) && pos != s->stream_pos) {
        reply_error(dev, seq, TMLR_E_STREAM_POS, TMLR_CMD_SHIM, s->stream_pos);
        return;
    }
    uint8_t *out = dev->reply + 2;
    if (run_shim(s, p + 6, count, out + 6) != TMLR_OK) {
        reply_error(dev, seq, TMLR_E_BAD_PARAMS, TMLR_CMD_SHIM, 0);
        return;
    }
    put_u32(out, pos + count);
    put_u16(out + 4, (uint16_t)count);
    reply(dev, TMLR_CMD_SHIM | 0x80, seq, 6 + count * shim_out_bytes(s));
}

/* The model input of INFER or PROBE into dev->tensor_in: the payload itself, or (2 bytes) the CRC-16 of an input
 * sent by LOAD, checked against the staged bytes. Returns 0 after replying with the error. */
static int take_input(tmlr_device *dev, uint8_t seq, uint8_t cmd, const uint8_t *p, uint32_t n)
{
    const tmlr_model *m = dev->model;
    const int staged = n == 2 && m->in_size != 2u;
    if ((n != m->in_size && !staged) || m->in_size > TMLR_DEV_MAX_TENSOR || m->out_size > TMLR_DEV_MAX_TENSOR) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, cmd, m->in_size);
        return 0;
    }
    if (staged) {
        if (crc16((const uint8_t *)dev->tensor_in, m->in_size) != get_u16(p)) {
            reply_error(dev, seq, TMLR_E_STAGE, cmd, 0);
            return 0;
        }
    } else {
        memcpy(dev->tensor_in, p, n);
    }
    return 1;
}

typedef struct {
    uint8_t *out;     /* next 4-byte record of the reply */
    uint32_t layers;  /* records written */
    uint32_t room;    /* records that fit */
} probe_digest;

/* PROBE's layer hook: CRC-16, min and max of one layer's output. */
static void digest_layer(void *ctx, int32_t layer, const int8_t *data, int32_t size)
{
    probe_digest *d = (probe_digest *)ctx;
    int8_t lo = 127, hi = -128;
    (void)layer;
    if (d->layers >= d->room) {
        return;
    }
    for (int32_t i = 0; i < size; i++) {
        lo = data[i] < lo ? data[i] : lo;
        hi = data[i] > hi ? data[i] : hi;
    }
    put_u16(d->out, crc16((const uint8_t *)data, (uint32_t)size));
    d->out[2] = (uint8_t)lo;
    d->out[3] = (uint8_t)hi;
    d->out += 4;
    d->layers++;
}

/* PROBE: run the model on an input and reply with every layer's digest: u16 count, count x (u16 CRC, i8 min,
 * i8 max). One round trip per input finds the first layer that differs from the host's integer program. */
static void cmd_probe(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    const tmlr_model *m = dev->model;
    if (m == NULL || m->probe == NULL) {
        reply_error(dev, seq, TMLR_E_NO_MODEL, TMLR_CMD_PROBE, 0);
        return;
    }
    if (!take_input(dev, seq, TMLR_CMD_PROBE, p, n)) {
        return;
    }
    probe_digest d = {dev->reply + 4, 0, (TMLR_DEV_MAX_PAYLOAD - 2u) / 4u};
    const int32_t rc = m->probe(m->ctx, dev->tensor_in, dev->tensor_out, digest_layer, &d);
    if (rc != 0) {
        reply_error(dev, seq, TMLR_E_MODEL_FAILED, TMLR_CMD_PROBE, (uint32_t)rc);
        return;
    }
    put_u16(dev->reply + 2, (uint16_t)d.layers);
    reply(dev, TMLR_CMD_PROBE | 0x80, seq, 2u + 4u * d.layers);
}

typedef struct {
    int32_t layer;   /* the layer whose output is read */
    uint32_t offset; /* first byte wanted */
    uint8_t *out;    /* reply bytes */
    uint32_t room;   /* bytes that fit the reply */
    uint32_t copied;
    uint32_t size;   /* that layer's output size (0: no such layer) */
} read_request;

/* READ's layer hook: a window of one layer's output bytes into the reply. */
static void copy_layer(void *ctx, int32_t layer, const int8_t *data, int32_t size)
{
    read_request *r = (read_request *)ctx;
    if (layer != r->layer) {
        return;
    }
    r->size = (uint32_t)size;
    if (r->offset < r->size) {
        r->copied = r->size - r->offset < r->room ? r->size - r->offset : r->room;
        memcpy(r->out, data + r->offset, r->copied);
    }
}

/* READ: run the model on an input and reply with bytes [offset, offset + room) of one layer's output:
 * u16 layer, u32 offset, u32 the layer's size, bytes. Tensors larger than a frame take one run per window. */
static void cmd_read(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    const tmlr_model *m = dev->model;
    if (m == NULL || m->probe == NULL) {
        reply_error(dev, seq, TMLR_E_NO_MODEL, TMLR_CMD_READ, 0);
        return;
    }
    if (n < 6) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_READ, 0);
        return;
    }
    read_request r = {(int32_t)get_u16(p), get_u32(p + 2), dev->reply + 12, TMLR_DEV_MAX_PAYLOAD - 10u, 0, 0};
    if (r.layer >= m->num_layers) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_READ, (uint32_t)m->num_layers);
        return;
    }
    if (!take_input(dev, seq, TMLR_CMD_READ, p + 6, n - 6)) {
        return;
    }
    const int32_t rc = m->probe(m->ctx, dev->tensor_in, dev->tensor_out, copy_layer, &r);
    if (rc != 0) {
        reply_error(dev, seq, TMLR_E_MODEL_FAILED, TMLR_CMD_READ, (uint32_t)rc);
        return;
    }
    put_u16(dev->reply + 2, (uint16_t)r.layer);
    put_u32(dev->reply + 4, r.offset);
    put_u32(dev->reply + 8, r.size);
    reply(dev, TMLR_CMD_READ | 0x80, seq, 10u + r.copied);
}

static void cmd_infer(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    const tmlr_model *m = dev->model;
    if (m == NULL) {
        reply_error(dev, seq, TMLR_E_NO_MODEL, TMLR_CMD_INFER, 0);
        return;
    }
    tmlr_shim_params *s = &dev->shim;
    const int with_shim = s->params_id != 0 && s->kind == TMLR_SHIM_CLASSIFIER && (uint32_t)s->num_classes == m->out_size;
    /* an autoencoder's anomaly path: its score from the input and the output, then (threshold kind) the alarm */
    const int with_score = s->params_id != 0 && s->has_score;
    const uint32_t score_bytes = with_score ? (s->kind == TMLR_SHIM_THRESHOLD ? 3u : 2u) : 0u;
    const uint32_t out_len = 9 + m->out_size + (with_shim ? shim_out_bytes(s) : 0u) + score_bytes;
    if (out_len > TMLR_DEV_MAX_PAYLOAD) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_INFER, m->in_size);
        return;
    }
    if (with_score && ((uint32_t)s->score_size != m->in_size || (uint32_t)s->score_size != m->out_size)) {
        reply_error(dev, seq, TMLR_E_BAD_PARAMS, TMLR_CMD_INFER, m->out_size);
        return;
    }
    /* raw int16 readings (2 bytes per input) through the model's input pre-shim, or the int8 input itself */
    const int raw = m->pre_mult != NULL && n == 2u * m->in_size && m->in_size <= TMLR_DEV_MAX_RAW;
    if (raw) {
        for (uint32_t i = 0; i < m->in_size; i++) {
            dev->raw_in[i] = (int16_t)get_u16(p + 2 * i);
        }
        if (tmlr_input_pre_shim_s16(dev->raw_in, 1, (int32_t)m->in_size, m->pre_mult, m->pre_shift, m->pre_offset,
                                    m->in_zero_point, dev->tensor_in) != TMLR_OK) {
            reply_error(dev, seq, TMLR_E_MODEL_FAILED, TMLR_CMD_INFER, 0);
            return;
        }
    } else if (!take_input(dev, seq, TMLR_CMD_INFER, p, n)) {
        return;
    }
    const uint64_t t0 = tmlr_port_counter();
    int32_t rc = 0;
    for (int32_t r = 0; r < TMLR_DEV_INFER_REPEAT && rc == 0; r++) {
        rc = m->invoke(m->ctx, dev->tensor_in, dev->tensor_out);
    }
    const uint64_t t1 = tmlr_port_counter();
    if (rc != 0) {
        reply_error(dev, seq, TMLR_E_MODEL_FAILED, TMLR_CMD_INFER, (uint32_t)rc);
        return;
    }
    uint8_t *out = dev->reply + 2;
    memcpy(out + 9, dev->tensor_out, m->out_size);
    uint64_t t2 = t1;
    if (with_shim) {
        if (run_shim(s, (const uint8_t *)dev->tensor_out, 1, out + 9 + m->out_size) != TMLR_OK) {
            reply_error(dev, seq, TMLR_E_BAD_PARAMS, TMLR_CMD_INFER, 0);
            return;
        }
        t2 = tmlr_port_counter();
    }
    if (with_score) {
        int16_t score = 0;
        uint8_t *at = out + 9 + m->out_size;
        if (tmlr_recon_score_s16(dev->tensor_in, dev->tensor_out, s->score_size, s->in_zp, s->out_zp,
                                 s->score_mult[0], s->score_mult[1], s->score_mult[2], s->score_shift,
                                 &score) != TMLR_OK) {
            reply_error(dev, seq, TMLR_E_BAD_PARAMS, TMLR_CMD_INFER, 0);
            return;
        }
        put_u16(at, (uint16_t)score);
        if (s->kind == TMLR_SHIM_THRESHOLD) {
            at[2] = (uint8_t)(score > s->threshold_q);
        }
        t2 = tmlr_port_counter();
    }
    put_u32(out, (uint32_t)(t1 - t0));
    put_u32(out + 4, (uint32_t)(t2 - t1));
    out[8] = (uint8_t)(with_shim || with_score);
    reply(dev, TMLR_CMD_INFER | 0x80, seq, out_len);
}

/* An opaque call the compiler cannot remove: the empty loop that BENCH subtracts. */
static void bench_nothing(void) { __asm__ __volatile__("" ::: "memory"); }

static void cmd_bench(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    tmlr_shim_params *s = &dev->shim;
    if (s->params_id == 0) {
        reply_error(dev, seq, TMLR_E_NO_PARAMS, TMLR_CMD_BENCH, 0);
        return;
    }
    if (n != 4 + shim_in_bytes(s)) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_BENCH, 0);
        return;
    }
    const uint32_t iters = get_u32(p);
    /* the window's state is copied so benchmarking never disturbs a stream in progress */
    static tmlr_shim_params scratch;
    memcpy(&scratch, s, sizeof scratch);
    scratch.window.ring = scratch.ring;
    uint8_t out[TMLR_DEV_MAX_CLASSES + 2];
    tmlr_port_counter_edge();
    const uint64_t t0 = tmlr_port_counter();
    for (uint32_t i = 0; i < iters; i++) {
        bench_nothing();
    }
    const uint64_t t1 = tmlr_port_counter();
    tmlr_port_counter_edge();
    const uint64_t t2 = tmlr_port_counter();
    uint32_t checksum = 0;
    for (uint32_t i = 0; i < iters; i++) {
        bench_nothing();
        (void)run_shim(&scratch, p + 4, 1, out);
    }
    const uint64_t t3 = tmlr_port_counter();
    for (uint32_t i = 0; i < shim_out_bytes(s); i++) {
        checksum = checksum * 31u + out[i];
    }
    uint8_t *r = dev->reply + 2;
    put_u32(r, (uint32_t)(t3 - t2));
    put_u32(r + 4, (uint32_t)((t3 - t2) >> 32));
    put_u32(r + 8, (uint32_t)(t1 - t0));
    put_u32(r + 12, (uint32_t)((t1 - t0) >> 32));
    put_u32(r + 16, tmlr_port_counter_hz());
    put_u32(r + 20, checksum);
    reply(dev, TMLR_CMD_BENCH | 0x80, seq, 24);
}

/* LOAD: u32 offset, then bytes of the model input at that offset (idempotent: a retransmission rewrites the same
 * bytes). Replies with the offset just past them. */
static void cmd_load(tmlr_device *dev, uint8_t seq, const uint8_t *p, uint32_t n)
{
    const tmlr_model *m = dev->model;
    if (m == NULL) {
        reply_error(dev, seq, TMLR_E_NO_MODEL, TMLR_CMD_LOAD, 0);
        return;
    }
    if (n < 4 || m->in_size > TMLR_DEV_MAX_TENSOR) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_LOAD, m->in_size);
        return;
    }
    const uint32_t offset = get_u32(p);
    const uint32_t len = n - 4;
    if (offset > m->in_size || len > m->in_size - offset) {
        reply_error(dev, seq, TMLR_E_BAD_LENGTH, TMLR_CMD_LOAD, m->in_size);
        return;
    }
    memcpy((uint8_t *)dev->tensor_in + offset, p + 4, len);
    put_u32(dev->reply + 2, offset + len);
    reply(dev, TMLR_CMD_LOAD | 0x80, seq, 4);
}

static void execute(tmlr_device *dev, uint8_t cmd, uint8_t seq, const uint8_t *p, uint32_t n)
{
    switch (cmd) {
    case TMLR_CMD_HELLO:
        cmd_hello(dev, seq);
        break;
    case TMLR_CMD_SET_PARAMS: {
        const uint8_t err = parse_params(&dev->shim, p, n);
        if (err != 0) {
            memset(&dev->shim, 0, sizeof dev->shim);
            reply_error(dev, seq, err, cmd, 0);
            break;
        }
        dev->shim.params_id = get_u32(p);
        put_u32(dev->reply + 2, dev->shim.params_id);
        reply(dev, cmd | 0x80, seq, 4);
        break;
    }
    case TMLR_CMD_INFER:
        cmd_infer(dev, seq, p, n);
        break;
    case TMLR_CMD_SHIM:
        cmd_shim(dev, seq, p, n);
        break;
    case TMLR_CMD_BENCH:
        cmd_bench(dev, seq, p, n);
        break;
    case TMLR_CMD_LOAD:
        cmd_load(dev, seq, p, n);
        break;
    case TMLR_CMD_PROBE:
        cmd_probe(dev, seq, p, n);
        break;
    case TMLR_CMD_READ:
        cmd_read(dev, seq, p, n);
        break;
    case TMLR_CMD_RESET:
        if (!(n == 1 && p[0] <= 2) && !(n == 5 && p[0] == 0)) {
            reply_error(dev, seq, TMLR_E_BAD_LENGTH, cmd, 0);
            break;
        }
        if (p[0] == 0) {
            clear_state(&dev->shim);
            dev->shim.stream_pos = n == 5 ? get_u32(p + 1) : 0u; /* the position of the next sample */
        } else {
            memset(&dev->shim, 0, sizeof dev->shim);
        }
        dev->reply[2] = p[0];
        reply(dev, cmd | 0x80, seq, 1);
        dev->reboot_pending = (uint8_t)(p[0] == 2);
        break;
    default:
        reply_error(dev, seq, TMLR_E_UNKNOWN_COMMAND, cmd, 0);
    }
}

static void handle_frame(tmlr_device *dev)
{
    const int32_t m = cobs_decode(dev->rx, dev->rx_len, dev->frame, TMLR_DEV_FRAME_MAX);
    if (m < 4) {
        link_error(0, TMLR_E_FRAMING, 0);
        return;
    }
    const uint32_t len = (uint32_t)m;
    const uint16_t want = get_u16(dev->frame + len - 2);
    if (crc16(dev->frame, len - 2) != want) {
        link_error(dev->frame[1], TMLR_E_CRC, 0);
        return;
    }
    const uint8_t cmd = dev->frame[0], seq = dev->frame[1];
    if (dev->last_valid && cmd == dev->last_cmd && seq == dev->last_seq && want == dev->last_crc) {
        tmlr_port_write(dev->tx, dev->tx_len); /* a retransmission: same reply, not executed again */
        return;
    }
    execute(dev, cmd, seq, dev->frame + 2, len - 4);
    dev->last_valid = 1;
    dev->last_cmd = cmd;
    dev->last_seq = seq;
    dev->last_crc = want;
    if (dev->reboot_pending) {
        dev->reboot_pending = 0;
        tmlr_port_reboot();
    }
}

void tmlr_device_init(tmlr_device *dev, const tmlr_model *model)
{
    memset(dev, 0, sizeof *dev);
    dev->model = model;
}

void tmlr_device_rx(tmlr_device *dev, uint8_t byte)
{
    if (byte != 0) {
        if (dev->rx_len < sizeof dev->rx) {
            dev->rx[dev->rx_len++] = byte;
        } else {
            dev->rx_overflow = 1;
        }
        return;
    }
    if (dev->rx_overflow) {
        link_error(0, TMLR_E_OVERFLOW, 0);
    } else if (dev->rx_len > 0) {
        handle_frame(dev);
    }
    dev->rx_len = 0;
    dev->rx_overflow = 0;
}
