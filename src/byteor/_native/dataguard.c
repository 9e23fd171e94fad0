/* DataGuard hot path: one compiled plan checks and redacts a USM1 envelope in a single pass.
 *
 * The Python engine (byteor/dataguard/engine.py) is the reference; this kernel reproduces it byte
 * for byte for the common case -- a message of the run's selected (schema_id, msg_type, version) --
 * and answers FALLBACK for anything else (another version or tuple, an unknown mapkv key, a rule on
 * a value whose tag is not its field's type in the redact flow), which Python then handles fully.
 * A FALLBACK message leaves no trace here: no counter moves.
 *
 * Exposed by byteor_dataguard_init(m) as byteor._native.DgPlan:
 *   DgPlan(expected_codec, schema_id, msg_type, msg_version, row, check, redact, forward_on_reject,
 *          capacity, fields, rules, hash_key)
 *     fields: tuple of (name: bytes, tag: int, required: bool, rule: int (-1 = none))
 *     rules:  tuple of (action: int 0 drop | 1 replace_with | 2 hash | 3 mask | 4 truncate,
 *                       replacement: bytes, replacement_int: int | None, replacement_bool: int (-1 none),
 *                       prefix: int, suffix: int, mask: bytes (UTF-8 of the mask character), n: int)
 *     hash_key: bytes | None (HMAC-SHA256 key; None = plain SHA-256)
 *   plan.run(src, out) -> int   >= 0: redacted envelope of that length in out; -1 drop;
 *                               -2 forward the input unchanged; -3 FALLBACK (Python decides)
 *   plan.counts() -> tuple of the 12 report counters (report.COUNTERS order)
 *   plan.rule_counts() -> tuple of (applied, noop) per rule
 */

#include "native.h"
#include <stdint.h>
#include <string.h>

/* ============================================================================================ */
/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104)                                               */
/* ============================================================================================ */

typedef struct {
    uint32_t h[8];
    uint64_t total;     /* bytes absorbed */
    uint8_t buf[64];
    size_t used;
} dg_sha256;

static const uint32_t DG_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

#define DG_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void dg_sha256_init(dg_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                   0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->used = 0;
}

static void dg_sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = DG_ROR(w[i - 15], 7) ^ DG_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = DG_ROR(w[i - 2], 17) ^ DG_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (DG_ROR(e, 6) ^ DG_ROR(e, 11) ^ DG_ROR(e, 25)) + ((e & f) ^ (~e & g)) + DG_K[i] + w[i];
        uint32_t t2 = (DG_ROR(a, 2) ^ DG_ROR(a, 13) ^ DG_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void dg_sha256_update(dg_sha256 *s, const uint8_t *p, size_t n) {
    s->total += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take; p += take; n -= take;
        if (s->used < 64) return;
        dg_sha256_block(s->h, s->buf);
        s->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) dg_sha256_block(s->h, p);
    memcpy(s->buf, p, n);
    s->used = n;
}

static void dg_sha256_final(dg_sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80;
    dg_sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->used != 56) dg_sha256_update(s, &zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    dg_sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24); out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8); out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* ============================================================================================ */
/* The plan object                                                                               */
/* ============================================================================================ */

enum { A_DROP = 0, A_REPLACE = 1, A_HASH = 2, A_MASK = 3, A_TRUNCATE = 4 };
enum { T_STRING = 0, T_INT = 1, T_BYTES = 2, T_BOOL = 3 };
enum { R_DROP = -1, R_FORWARD_INPUT = -2, R_FALLBACK = -3 };
/* counters, in report.COUNTERS order */
enum { C_SEEN, C_ACCEPTED, C_REJECTED, C_DECODE_ERR, C_CODEC_MISMATCH, C_SCHEMA_MISSING,
       C_SCHEMA_INCOMPATIBLE, C_REDACT_OVERFLOW, C_OUT_DROP, C_OUT_FORWARD_INPUT, C_OUT_FORWARD_OUTPUT,
       C_REDACT_NOOP, C_COUNT };

#define DG_MAX_FIELDS 64
#define DG_HEADER 24
#define DG_MAX_PAYLOAD 65535
/* rules.MAX_RULE_NUMBER: the largest prefix, suffix or truncate length a plan accepts */
#define DG_MAX_RULE_NUMBER ((Py_ssize_t)1 << 20)

typedef struct {
    const uint8_t *name;
    Py_ssize_t name_len;
    int tag;
    int rule;
} dg_field;

typedef struct {
    int action;
    const uint8_t *repl;
    Py_ssize_t repl_len;
    int has_int;
    int64_t repl_int;
    int repl_bool;       /* -1: not a bool literal */
    Py_ssize_t prefix, suffix, n;
    const uint8_t *mask;
    Py_ssize_t mask_len;
} dg_rule;

typedef struct {
    PyObject_HEAD
    int expected_codec;
    uint64_t schema_id;
    uint32_t msg_type;
    int msg_version;
    int row, check, redact, forward_on_reject;
    Py_ssize_t capacity;
    int nfields, nrules;
    uint64_t required_mask;
    dg_field fields[DG_MAX_FIELDS];
    dg_rule *rules;
    int keyed;
    dg_sha256 inner, outer;  /* HMAC states after absorbing key^ipad / key^opad */
    PyObject *keep;          /* the fields and rules tuples: their bytes back the pointers above */
    uint64_t counts[C_COUNT];
    uint64_t *rule_applied, *rule_noop;
} DgPlan;

/* ---- little readers ---- */

/* Unsigned LEB128 exactly as codecs.read_varint: at most 10 bytes, value must fit 64 bits. */
static inline int dg_varint(const uint8_t *p, Py_ssize_t end, Py_ssize_t *pos, uint64_t *out) {
    uint64_t result = 0;
    int shift = 0;
    Py_ssize_t i = *pos;
    for (;;) {
        if (i >= end) return -1;
        uint8_t b = p[i++];
        if (shift == 63 && (b & 0x7f) > 1) return -1;         /* overflows 64 bits */
        result |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) { *pos = i; *out = result; return 0; }
        shift += 7;
        if (shift >= 70) return -1;
    }
}

static inline Py_ssize_t dg_put_varint(uint8_t *o, uint64_t v) {
    Py_ssize_t n = 0;
    while (v >= 0x80) { o[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    o[n++] = (uint8_t)v;
    return n;
}

static inline Py_ssize_t dg_varint_len(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

/* Strict UTF-8 (what Python's decoder accepts); returns the code point count, or -1. */
static Py_ssize_t dg_utf8_count(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0, cps = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; cps++; continue; }
        Py_ssize_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return -1;
        if (i + need >= n) return -1;                          /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi) return -1;
        for (Py_ssize_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return -1;
        i += need + 1;
        cps++;
    }
    return cps;
}

/* Byte offset of code point number k (0-based) in valid UTF-8 of n bytes; n when k >= count. */
static Py_ssize_t dg_utf8_offset(const uint8_t *s, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t i = 0;
    while (k > 0 && i < n) {
        i++;
        while (i < n && (s[i] & 0xC0) == 0x80) i++;
        k--;
    }
    return i;
}

/* ---- output writer (stops writing past the limit but keeps counting) ---- */

typedef struct {
    uint8_t *p;
    Py_ssize_t len, limit;
} dg_out;

static inline void dg_w(dg_out *o, const void *src, Py_ssize_t n) {
    if (o->len + n <= o->limit) memcpy(o->p + o->len, src, (size_t)n);
    o->len += n;
}

static inline void dg_wv(dg_out *o, uint64_t v) {
    uint8_t tmp[10];
    dg_w(o, tmp, dg_put_varint(tmp, v));
}

static inline void dg_wfill(dg_out *o, const uint8_t *unit, Py_ssize_t unit_len, Py_ssize_t times) {
    for (Py_ssize_t t = 0; t < times; t++) dg_w(o, unit, unit_len);
}

/* ---- one value ---- */

typedef struct {
    int tag;
    const uint8_t *data;   /* string/bytes content */
    Py_ssize_t len;
    uint64_t raw;          /* int: zigzag varint value; bool: 0/1 */
    Py_ssize_t cps;        /* string: code points */
} dg_value;

/* Read a tagged value; 0 ok, -1 decode error. Strings are UTF-8 checked. */
static int dg_read_value(const uint8_t *p, Py_ssize_t end, Py_ssize_t *pos, dg_value *v) {
    uint64_t tag;
    if (dg_varint(p, end, pos, &tag) < 0) return -1;
    if (tag == T_STRING || tag == T_BYTES) {
        uint64_t n;
        if (dg_varint(p, end, pos, &n) < 0) return -1;
        if (n > (uint64_t)(end - *pos)) return -1;
        v->data = p + *pos;
        v->len = (Py_ssize_t)n;
        *pos += (Py_ssize_t)n;
        if (tag == T_STRING) {
            v->cps = dg_utf8_count(v->data, v->len);
            if (v->cps < 0) return -1;
        }
    } else if (tag == T_INT) {
        if (dg_varint(p, end, pos, &v->raw) < 0) return -1;
    } else if (tag == T_BOOL) {
        if (*pos >= end || p[*pos] > 1) return -1;
        v->raw = p[*pos];
        (*pos)++;
    } else {
        return -1;
    }
    v->tag = (int)tag;
    return 0;
}

static void dg_write_value(dg_out *o, const dg_value *v) {
    uint8_t t = (uint8_t)v->tag;
    dg_w(o, &t, 1);
    if (v->tag == T_STRING || v->tag == T_BYTES) {
        dg_wv(o, (uint64_t)v->len);
        dg_w(o, v->data, v->len);
    } else if (v->tag == T_INT) {
        dg_wv(o, v->raw);
    } else {
        uint8_t b = (uint8_t)v->raw;
        dg_w(o, &b, 1);
    }
}

static const char DG_HEX[] = "0123456789abcdef";

/* Apply one rule to a value whose tag is its field's type. Writes the result (tag + content) unless
 * dropped. Returns 1 applied, 0 noop, 2 dropped (row: the empty value is written), -3 fallback. */
static int dg_apply(DgPlan *pl, const dg_rule *r, const dg_value *v, dg_out *o) {
    dg_value nv = *v;
    switch (r->action) {
    case A_DROP:
        if (pl->row) {
            nv.len = 0; nv.raw = 0; nv.cps = 0;
            dg_write_value(o, &nv);
        }
        return 2;
    case A_REPLACE:
        if (v->tag == T_INT) {
            if (!r->has_int) return R_FALLBACK;
            int64_t x = r->repl_int;
            nv.raw = ((uint64_t)x << 1) ^ (uint64_t)(x >> 63);
            dg_write_value(o, &nv);
            return nv.raw == v->raw ? 0 : 1;
        }
        if (v->tag == T_BOOL) {
            if (r->repl_bool < 0) return R_FALLBACK;
            nv.raw = (uint64_t)r->repl_bool;
            dg_write_value(o, &nv);
            return nv.raw == v->raw ? 0 : 1;
        }
        nv.data = r->repl; nv.len = r->repl_len;
        dg_write_value(o, &nv);
        return (v->len == r->repl_len && memcmp(v->data, r->repl, (size_t)v->len) == 0) ? 0 : 1;
    case A_HASH: {
        if (v->tag != T_STRING && v->tag != T_BYTES) return R_FALLBACK;
        uint8_t digest[32];
        dg_sha256 s = pl->keyed ? pl->inner : (dg_sha256){0};
        if (!pl->keyed) dg_sha256_init(&s);
        dg_sha256_update(&s, v->data, (size_t)v->len);
        dg_sha256_final(&s, digest);
        if (pl->keyed) {
            dg_sha256 t = pl->outer;
            dg_sha256_update(&t, digest, 32);
            dg_sha256_final(&t, digest);
        }
        uint8_t text[71];
        memcpy(text, "sha256:", 7);
        for (int i = 0; i < 32; i++) { text[7 + 2 * i] = (uint8_t)DG_HEX[digest[i] >> 4];
                                       text[8 + 2 * i] = (uint8_t)DG_HEX[digest[i] & 15]; }
        nv.data = text; nv.len = 71;
        dg_write_value(o, &nv);
        return 1;
    }
    case A_MASK:
    case A_TRUNCATE: {
        if (v->tag != T_STRING && v->tag != T_BYTES) return R_FALLBACK;
        int str = v->tag == T_STRING;
        Py_ssize_t units = str ? v->cps : v->len;
        uint8_t t = (uint8_t)v->tag;
        if (r->action == A_TRUNCATE) {
            if (units <= r->n) { dg_write_value(o, v); return 0; }
            Py_ssize_t cut = str ? dg_utf8_offset(v->data, v->len, r->n) : r->n;
            nv.len = cut;
            dg_write_value(o, &nv);
            return 1;
        }
        /* Compared without forming prefix + suffix: both come from a rule and their sum must not
         * overflow whatever they are (the plan also bounds them to DG_MAX_RULE_NUMBER). */
        if (units <= r->prefix || units - r->prefix <= r->suffix) { dg_write_value(o, v); return 0; }
        Py_ssize_t middle = units - r->prefix - r->suffix;
        Py_ssize_t head = str ? dg_utf8_offset(v->data, v->len, r->prefix) : r->prefix;
        Py_ssize_t tail = str ? dg_utf8_offset(v->data, v->len, units - r->suffix) : v->len - r->suffix;
        Py_ssize_t masked, total;
        if (__builtin_mul_overflow(middle, r->mask_len, &masked) ||
            __builtin_add_overflow(head + (v->len - tail), masked, &total))
            return R_FALLBACK;
        dg_w(o, &t, 1);
        dg_wv(o, (uint64_t)total);
        dg_w(o, v->data, head);
        dg_wfill(o, r->mask, r->mask_len, middle);
        dg_w(o, v->data + tail, v->len - tail);
        return 1;
    }
    default:
        return R_FALLBACK;
    }
}

/* ---- the per-message pass ---- */

static inline Py_ssize_t dg_reject(DgPlan *pl, int reason) {
    pl->counts[C_SEEN]++;
    pl->counts[reason]++;
    pl->counts[C_REJECTED]++;
    if (pl->forward_on_reject) { pl->counts[C_OUT_FORWARD_INPUT]++; return R_FORWARD_INPUT; }
    pl->counts[C_OUT_DROP]++;
    return R_DROP;
}

static Py_ssize_t dg_run(DgPlan *pl, const uint8_t *m, Py_ssize_t size, uint8_t *out, Py_ssize_t out_len,
                         uint32_t *applied, uint32_t *noop) {
    if (size < DG_HEADER) return dg_reject(pl, C_DECODE_ERR);
    if (memcmp(m, "USM1", 4) != 0) return dg_reject(pl, C_DECODE_ERR);
    unsigned flags = (unsigned)m[4] | ((unsigned)m[5] << 8);
    int codec = m[6];
    Py_ssize_t header_len = m[7];
    uint64_t schema_id = 0;
    for (int i = 7; i >= 0; i--) schema_id = (schema_id << 8) | m[8 + i];
    uint32_t msg_type = (uint32_t)m[16] | ((uint32_t)m[17] << 8) | ((uint32_t)m[18] << 16) | ((uint32_t)m[19] << 24);
    int version = m[20] | (m[21] << 8);
    Py_ssize_t payload_len = m[22] | (m[23] << 8);
    if (header_len < DG_HEADER || flags != 0) return dg_reject(pl, C_DECODE_ERR);
    Py_ssize_t end = header_len + payload_len;
    if (end > pl->capacity || end > size) return dg_reject(pl, C_DECODE_ERR);
    if (codec != pl->expected_codec) return dg_reject(pl, C_CODEC_MISMATCH);
    if (schema_id != pl->schema_id || msg_type != pl->msg_type || version != pl->msg_version)
        return R_FALLBACK;

    const uint8_t *p = m;
    Py_ssize_t pos = header_len;
    Py_ssize_t limit = out_len < pl->capacity ? out_len : pl->capacity;
    dg_out o = {out, DG_HEADER, limit};
    uint64_t count = 0, present = 0;
    int incompatible = 0, changed = 0;
    Py_ssize_t kept = 0, count_at = DG_HEADER, count_len = 0;
    memset(applied, 0, sizeof(uint32_t) * (size_t)pl->nrules);
    memset(noop, 0, sizeof(uint32_t) * (size_t)pl->nrules);

    if (!pl->row) {
        if (dg_varint(p, end, &pos, &count) < 0) return dg_reject(pl, C_DECODE_ERR);
        count_len = dg_varint_len(count);
        o.len += count_len;             /* room for the output count; fixed up at the end */
    }
    Py_ssize_t nitems = pl->row ? pl->nfields : (Py_ssize_t)(count > (uint64_t)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : count);
    int hint = 0;
    for (Py_ssize_t item = 0; item < nitems; item++) {
        int fi;
        const uint8_t *key = NULL;
        Py_ssize_t key_len = 0;
        if (pl->row) {
            fi = (int)item;
        } else {
            uint64_t kn;
            if (dg_varint(p, end, &pos, &kn) < 0 || kn > (uint64_t)(end - pos)) return dg_reject(pl, C_DECODE_ERR);
            key = p + pos;
            key_len = (Py_ssize_t)kn;
            pos += key_len;
            fi = -1;
            for (int j = 0; j < pl->nfields; j++) {
                int c = hint + j < pl->nfields ? hint + j : hint + j - pl->nfields;
                const dg_field *f = &pl->fields[c];
                if (f->name_len == key_len && memcmp(f->name, key, (size_t)key_len) == 0) { fi = c; break; }
            }
            if (fi < 0) return R_FALLBACK;      /* unknown key: Python classifies (duplicates, UTF-8) */
            if (present & ((uint64_t)1 << fi)) return dg_reject(pl, C_DECODE_ERR);  /* duplicate */
            present |= (uint64_t)1 << fi;
            hint = fi + 1 < pl->nfields ? fi + 1 : 0;
        }
        dg_value v;
        if (dg_read_value(p, end, &pos, &v) < 0) return dg_reject(pl, C_DECODE_ERR);
        const dg_field *f = &pl->fields[fi];
        if (v.tag != f->tag) {
            if (pl->row) return dg_reject(pl, C_SCHEMA_INCOMPATIBLE);
            if (pl->check) { incompatible = 1; continue; }
            if (f->rule >= 0 && pl->redact) return R_FALLBACK;
        }
        if (incompatible || !pl->redact) continue;
        Py_ssize_t mark = o.len;
        if (!pl->row) {
            dg_wv(&o, (uint64_t)key_len);
            dg_w(&o, key, key_len);
        }
        if (f->rule >= 0 && v.tag == f->tag) {
            int st = dg_apply(pl, &pl->rules[f->rule], &v, &o);
            if (st == R_FALLBACK) return R_FALLBACK;
            if (st == 0) noop[f->rule]++;
            else { applied[f->rule]++; changed = 1; }
            if (st == 2 && !pl->row) { o.len = mark; continue; }
        } else {
            dg_write_value(&o, &v);
        }
        kept++;
    }
    if (pos != end) return dg_reject(pl, C_DECODE_ERR);
    if (pl->row) present = pl->required_mask;   /* a row carries every field by construction */
    if (pl->check && (incompatible || (present & pl->required_mask) != pl->required_mask))
        return dg_reject(pl, C_SCHEMA_INCOMPATIBLE);
    pl->counts[C_SEEN]++;
    if (!pl->redact) {
        pl->counts[C_ACCEPTED]++;
        pl->counts[C_OUT_FORWARD_INPUT]++;
        return R_FORWARD_INPUT;
    }
    uint64_t nnoop = 0;
    for (int i = 0; i < pl->nrules; i++) {
        pl->rule_applied[i] += applied[i];
        pl->rule_noop[i] += noop[i];
        nnoop += noop[i];
    }
    pl->counts[C_REDACT_NOOP] += nnoop;
    if (!changed) {
        pl->counts[C_ACCEPTED]++;
        pl->counts[C_OUT_FORWARD_INPUT]++;
        return R_FORWARD_INPUT;
    }
    Py_ssize_t total = o.len;
    if (!pl->row) {
        Py_ssize_t need = dg_varint_len((uint64_t)kept);
        total -= count_len - need;
        if (o.len <= limit) {
            if (need != count_len)
                memmove(out + count_at + need, out + count_at + count_len, (size_t)(o.len - count_at - count_len));
            dg_put_varint(out + count_at, (uint64_t)kept);
        }
    }
    Py_ssize_t body = total - DG_HEADER;
    if (o.len > limit || total > limit || body > DG_MAX_PAYLOAD) {
        pl->counts[C_REDACT_OVERFLOW]++;
        pl->counts[C_REJECTED]++;
        pl->counts[C_OUT_DROP]++;
        return R_DROP;
    }
    memcpy(out, "USM1", 4);
    out[4] = 0; out[5] = 0;
    out[6] = (uint8_t)codec;
    out[7] = DG_HEADER;
    memcpy(out + 8, m + 8, 14);        /* schema_id, msg_type, msg_version */
    out[22] = (uint8_t)(body & 0xff);
    out[23] = (uint8_t)(body >> 8);
    pl->counts[C_ACCEPTED]++;
    pl->counts[C_OUT_FORWARD_OUTPUT]++;
    return total;
}

/* ---- Python glue ---- */

static PyObject *DgPlan_run(DgPlan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "run(src, out) takes two arguments");
        return NULL;
    }
    Py_buffer src, out;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    uint32_t applied[DG_MAX_FIELDS], noop[DG_MAX_FIELDS];
    Py_ssize_t r = dg_run(self, (const uint8_t *)src.buf, src.len, (uint8_t *)out.buf, out.len, applied, noop);
    PyBuffer_Release(&out);
    PyBuffer_Release(&src);
    return PyLong_FromSsize_t(r);
}

static PyObject *DgPlan_counts(DgPlan *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *t = PyTuple_New(C_COUNT);
    if (!t) return NULL;
    for (int i = 0; i < C_COUNT; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->counts[i]);
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *DgPlan_rule_counts(DgPlan *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *t = PyTuple_New(self->nrules);
    if (!t) return NULL;
    for (int i = 0; i < self->nrules; i++) {
        PyObject *pair = Py_BuildValue("(KK)", (unsigned long long)self->rule_applied[i],
                                       (unsigned long long)self->rule_noop[i]);
        if (!pair) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, pair);
    }
    return t;
}

static int dg_bytes(PyObject *o, const uint8_t **p, Py_ssize_t *n, const char *what) {
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "DgPlan: %s must be bytes", what);
        return -1;
    }
    *p = (const uint8_t *)PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

static PyObject *DgPlan_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    int expected_codec, msg_version, row, check, redact, forward;
    unsigned long long schema_id;
    unsigned long msg_type;
    Py_ssize_t capacity;
    PyObject *fields, *rules, *key;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "DgPlan takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iKkippppnO!O!O", &expected_codec, &schema_id, &msg_type, &msg_version, &row,
                          &check, &redact, &forward, &capacity, &PyTuple_Type, &fields, &PyTuple_Type, &rules,
                          &key))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(fields), nr = PyTuple_GET_SIZE(rules);
    if (nf > DG_MAX_FIELDS || nr > DG_MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "DgPlan: at most 64 fields and 64 rules");
        return NULL;
    }
    DgPlan *self = (DgPlan *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->expected_codec = expected_codec;
    self->schema_id = schema_id;
    self->msg_type = (uint32_t)msg_type;
    self->msg_version = msg_version;
    self->row = row; self->check = check; self->redact = redact; self->forward_on_reject = forward;
    self->capacity = capacity;
    self->nfields = (int)nf;
    self->nrules = (int)nr;
    self->keep = PyTuple_Pack(3, fields, rules, key);
    self->rules = PyMem_Calloc((size_t)(nr ? nr : 1), sizeof(dg_rule));
    self->rule_applied = PyMem_Calloc((size_t)(nr ? nr : 1), sizeof(uint64_t));
    self->rule_noop = PyMem_Calloc((size_t)(nr ? nr : 1), sizeof(uint64_t));
    if (!self->keep || !self->rules || !self->rule_applied || !self->rule_noop) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *name;
        int tag, required, rule;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "Oipi", &name, &tag, &required, &rule)) goto fail;
        dg_field *f = &self->fields[i];
        if (dg_bytes(name, &f->name, &f->name_len, "field name") < 0) goto fail;
        if (tag < 0 || tag > 3 || rule < -1 || rule >= nr) {
            PyErr_SetString(PyExc_ValueError, "DgPlan: bad field tag or rule index");
            goto fail;
        }
        f->tag = tag;
        f->rule = rule;
        if (required) self->required_mask |= (uint64_t)1 << i;
    }
    for (Py_ssize_t i = 0; i < nr; i++) {
        PyObject *repl, *repl_int, *mask;
        dg_rule *r = &self->rules[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(rules, i), "iOOinnOn", &r->action, &repl, &repl_int, &r->repl_bool,
                              &r->prefix, &r->suffix, &mask, &r->n))
            goto fail;
        if (dg_bytes(repl, &r->repl, &r->repl_len, "replacement") < 0) goto fail;
        if (dg_bytes(mask, &r->mask, &r->mask_len, "mask") < 0) goto fail;
        if (r->action < A_DROP || r->action > A_TRUNCATE || r->prefix < 0 || r->suffix < 0 || r->n < 0 ||
            r->prefix > DG_MAX_RULE_NUMBER || r->suffix > DG_MAX_RULE_NUMBER || r->n > DG_MAX_RULE_NUMBER ||
            (r->action == A_MASK && (r->mask_len < 1 || r->mask_len > 4))) {
            PyErr_SetString(PyExc_ValueError, "DgPlan: bad rule (numbers 0..2**20, mask of 1..4 bytes)");
            goto fail;
        }
        if (repl_int != Py_None) {
            long long x = PyLong_AsLongLong(repl_int);
            if (x == -1 && PyErr_Occurred()) goto fail;
            r->has_int = 1;
            r->repl_int = (int64_t)x;
        }
    }
    if (key != Py_None) {
        const uint8_t *kp;
        Py_ssize_t kn;
        if (dg_bytes(key, &kp, &kn, "hash_key") < 0) goto fail;
        uint8_t block[64] = {0};
        if (kn > 64) {
            dg_sha256 s;
            dg_sha256_init(&s);
            dg_sha256_update(&s, kp, (size_t)kn);
            dg_sha256_final(&s, block);
        } else {
            memcpy(block, kp, (size_t)kn);
        }
        uint8_t pad[64];
        for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
        dg_sha256_init(&self->inner);
        dg_sha256_update(&self->inner, pad, 64);
        for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
        dg_sha256_init(&self->outer);
        dg_sha256_update(&self->outer, pad, 64);
        self->keyed = 1;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void DgPlan_dealloc(DgPlan *self) {
    PyMem_Free(self->rules);
    PyMem_Free(self->rule_applied);
    PyMem_Free(self->rule_noop);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef DgPlan_methods[] = {
    {"run", (PyCFunction)(void (*)(void))DgPlan_run, METH_FASTCALL,
     "run(src, out) -> int: >= 0 redacted length in out, -1 drop, -2 forward input, -3 fallback"},
    {"counts", (PyCFunction)DgPlan_counts, METH_NOARGS, "the 12 report counters, report.COUNTERS order"},
    {"rule_counts", (PyCFunction)DgPlan_rule_counts, METH_NOARGS, "(applied, noop) per rule"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DgPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byteor._native.DgPlan",
    .tp_basicsize = sizeof(DgPlan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled DataGuard plan for one (schema_id, msg_type, msg_version): check + redact in C.",
    .tp_new = DgPlan_new,
    .tp_dealloc = (destructor)DgPlan_dealloc,
    .tp_methods = DgPlan_methods,
};

int byteor_dataguard_init(PyObject *m) {
    if (PyType_Ready(&DgPlanType) < 0) return -1;
    Py_INCREF(&DgPlanType);
    if (PyModule_AddObject(m, "DgPlan", (PyObject *)&DgPlanType) < 0) {
        Py_DECREF(&DgPlanType);
        return -1;
    }
    return 0;
}
