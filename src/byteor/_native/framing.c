/*
 * byteor._native framing: the byte-level codecs of run's input and output framings and the shard
 * hash, shared by the file edges and the LaneGraph router in core.c. Pure functions over buffers:
 * no Python objects, no ring, safe to call with the GIL released.
 *
 * Each function reproduces a Python reference exactly (the tests compare them byte for byte):
 *   byteor_crc32        zlib.crc32 (CRC-32/ISO-HDLC, reflected polynomial 0xEDB88320)
 *   byteor_hex_line     "".join(line.decode("ascii", "replace").split()) then bytes.fromhex
 *   byteor_hex_encode   bytes.hex() (lowercase)
 *   byteor_utf8_replace bytes.decode("utf-8", "replace").encode("utf-8"): one U+FFFD per
 *                       ill-formed subsequence, exactly where CPython's decoder puts them
 */

#include "native.h"

#include <stdint.h>
#include <string.h>

/* ============================================================================
 * CRC-32 (zlib's), slice-by-4
 * ============================================================================ */

static uint32_t crc_table[4][256];
static int crc_ready = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 4; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
    crc_ready = 1;
}

uint32_t byteor_crc32(uint32_t crc, const unsigned char *p, size_t n) {
    uint32_t c = ~crc;
    while (n >= 4) {
        c ^= (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        c = crc_table[3][c & 0xFF] ^ crc_table[2][(c >> 8) & 0xFF] ^ crc_table[1][(c >> 16) & 0xFF] ^
            crc_table[0][c >> 24];
        p += 4;
        n -= 4;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

/* ============================================================================
 * Hex
 * ============================================================================ */

static const char HEX_DIGITS[] = "0123456789abcdef";
static signed char hex_value[256];

static void hex_init(void) {
    memset(hex_value, -1, sizeof hex_value);
    for (int i = 0; i < 10; i++) hex_value['0' + i] = (signed char)i;
    for (int i = 0; i < 6; i++) {
        hex_value['a' + i] = (signed char)(10 + i);
        hex_value['A' + i] = (signed char)(10 + i);
    }
}

/* str.isspace() of the character an ASCII byte decodes to (bytes >= 0x80 decode to U+FFFD). */
static inline int ascii_space(unsigned char c) { return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20); }

size_t byteor_hex_encode(const unsigned char *p, size_t n, unsigned char *out) {
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = (unsigned char)HEX_DIGITS[p[i] >> 4];
        out[2 * i + 1] = (unsigned char)HEX_DIGITS[p[i] & 15];
    }
    return 2 * n;
}

int byteor_hex_line(const unsigned char *line, size_t n, unsigned char *out, size_t cap, size_t *out_len,
                    int *bad, size_t *digits) {
    size_t count = 0, k = 0;
    int hi = -1;
    *bad = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = line[i];
        if (ascii_space(c)) continue;
        int v = hex_value[c];
        if (v < 0) {
            *bad = c;
            return BYTEOR_HEX_BAD_CHAR;
        }
        count++;
        if (hi < 0) {
            hi = v;
        } else {
            if (k < cap) out[k] = (unsigned char)(hi << 4 | v);
            k++;
            hi = -1;
        }
    }
    *digits = count;
    *out_len = k;
    if (count == 0) return BYTEOR_HEX_BLANK;
    if (count & 1) return BYTEOR_HEX_ODD;
    if (k > cap) return BYTEOR_HEX_TOO_LONG;
    return BYTEOR_HEX_OK;
}

/* ============================================================================
 * UTF-8 with replacement (CPython's decoder, errors="replace")
 * ============================================================================ */

static inline int cont(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t byteor_utf8_replace(const unsigned char *p, size_t n, unsigned char *out) {
    static const unsigned char REPL[3] = {0xEF, 0xBF, 0xBD};
    size_t i = 0, o = 0;
#define PUT_REPL() (memcpy(out + o, REPL, 3), o += 3)
    while (i < n) {
        unsigned char c = p[i];
        size_t left = n - i;
        if (c < 0x80) {
            out[o++] = c;
            i++;
        } else if (c < 0xC2) { /* a continuation byte, or C0/C1 (overlong) */
            PUT_REPL();
            i++;
        } else if (c < 0xE0) {
            if (left < 2) { /* truncated at the end: the rest is one error */
                PUT_REPL();
                i = n;
            } else if (!cont(p[i + 1])) {
                PUT_REPL();
                i++;
            } else {
                memcpy(out + o, p + i, 2);
                o += 2;
                i += 2;
            }
        } else if (c < 0xF0) {
            unsigned char c2 = left >= 2 ? p[i + 1] : 0;
            int bad2 = left >= 2 && (!cont(c2) || (c == 0xE0 && c2 < 0xA0) || (c == 0xED && c2 >= 0xA0));
            if (left < 3) {
                PUT_REPL();
                i = bad2 ? i + 1 : n;
            } else if (bad2) {
                PUT_REPL();
                i++;
            } else if (!cont(p[i + 2])) {
                PUT_REPL();
                i += 2;
            } else {
                memcpy(out + o, p + i, 3);
                o += 3;
                i += 3;
            }
        } else if (c < 0xF5) {
            unsigned char c2 = left >= 2 ? p[i + 1] : 0;
            int bad2 = left >= 2 && (!cont(c2) || (c == 0xF0 && c2 < 0x90) || (c == 0xF4 && c2 >= 0x90));
            if (left < 4) {
                PUT_REPL();
                if (bad2) i++;
                else if (left >= 3 && !cont(p[i + 2])) i += 2;
                else i = n;
            } else if (bad2) {
                PUT_REPL();
                i++;
            } else if (!cont(p[i + 2])) {
                PUT_REPL();
                i += 2;
            } else if (!cont(p[i + 3])) {
                PUT_REPL();
                i += 3;
            } else {
                memcpy(out + o, p + i, 4);
                o += 4;
                i += 4;
            }
        } else { /* F5..FF never start a sequence */
            PUT_REPL();
            i++;
        }
    }
#undef PUT_REPL
    return o;
}

/* ============================================================================
 * Python-level entry points (for tests and for Python code that needs the same codec)
 * ============================================================================ */

static PyObject *py_crc32(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32(data, value=0)");
        return NULL;
    }
    unsigned long start = 0;
    if (nargs == 2) {
        start = PyLong_AsUnsignedLongMask(args[1]);
        if (start == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = byteor_crc32((uint32_t)start, (const unsigned char *)b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyObject *py_utf8_replace(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, b.len * 3);
    if (out != NULL) {
        size_t n = byteor_utf8_replace((const unsigned char *)b.buf, (size_t)b.len,
                                       (unsigned char *)PyBytes_AS_STRING(out));
        _PyBytes_Resize(&out, (Py_ssize_t)n);
    }
    PyBuffer_Release(&b);
    return out;
}

static PyMethodDef framing_functions[] = {
    {"crc32", (PyCFunction)(void (*)(void))py_crc32, METH_FASTCALL,
     "crc32(data, value=0) -> int: zlib.crc32, as the shard router and the file edges compute it"},
    {"utf8_replace", (PyCFunction)py_utf8_replace, METH_O,
     "utf8_replace(data) -> bytes: data.decode('utf-8', 'replace').encode(), as the ascii output framing"},
    {NULL, NULL, 0, NULL},
};

int byteor_framing_init(PyObject *module) {
    if (!crc_ready) {
        crc_init();
        hex_init();
    }
    return PyModule_AddFunctions(module, framing_functions);
}
