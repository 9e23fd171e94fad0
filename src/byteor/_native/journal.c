/*
 * byteor._native journal: the hot path of journal lanes (append with two-phase commit, reader scan).
 *
 * A translation unit of byteor._native (core.c's module init calls `byteor_journal_init(m)`), or
 * built on its own with -DBYTEOR_JOURNAL_STANDALONE as the module `_byteor_journal` (tests only).
 *
 * Files, segments, rollover, fsync and recovery live in Python (byteor.lanes.journal); this file only
 * touches one mapped segment. Segment layout (format version 2, little-endian; documented byte by
 * byte in docs/lanegraph.md):
 *
 *   0   u8[8] magic "BYTEORJL"        8  u32 version (2)       12 u32 header_bytes (128)
 *   16  u64 segment index             24 u64 segment_bytes     32 u64 first record index
 *   40  u64 created unix ns           48 u32 max payload bytes 52 u32 reserved (0)
 *   56  u8[32] spec hash (raw SHA-256, zeros = none)           88 u32 crc32 of bytes 0..87
 *   92  u32 segment flags (bit 0 SEALED)   96 u64 records in the segment (set when sealed)
 *   104 u32 crc32 of bytes 92..103    108 reserved (0) to 128
 *   128 records: u32 payload length, u32 flags (bit 0 COMMITTED), u32 crc32 of the length's 4 bytes
 *       followed by the payload, u32 reserved (0), payload, zero pad to 8
 *
 * Two-phase append: (1) reserve: one 8-byte store of {length, flags=0} (and zeroed crc); (2) copy the
 * payload and zero the pad; (3) commit: compute the record's crc32, then store-release
 * flags=COMMITTED. A reader load-acquires the flags word and returns the payload only when COMMITTED
 * is set and the crc matches, so it never sees a half-written or damaged record. A crash between (1)
 * and (3) leaves {length, 0}: readers stop there; the Python writer zeroes it when it reopens.
 * CRC-32 is the zlib/IEEE polynomial (0xEDB88320, reflected), so Python checks it with zlib.crc32.
 */

#include "native.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* ============================================================================
 * Layout constants
 * ============================================================================ */

#define JOURNAL_HEADER_BYTES 128
#define JOURNAL_RECORD_HEADER 16
#define JOURNAL_FLAG_COMMITTED 1u
#define JOURNAL_KNOWN_FLAGS JOURNAL_FLAG_COMMITTED
#define JOURNAL_FORMAT_VERSION 2

static inline Py_ssize_t journal_pad8(Py_ssize_t n) { return (n + 7) & ~(Py_ssize_t)7; }

/* ============================================================================
 * CRC-32 (IEEE, reflected 0xEDB88320: the same value as zlib.crc32), slicing by 8
 * ============================================================================ */

static uint32_t journal_crc_table[8][256];

static void journal_crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
        journal_crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            journal_crc_table[t][i] = (journal_crc_table[t - 1][i] >> 8) ^ journal_crc_table[0][journal_crc_table[t - 1][i] & 0xFFu];
}

/* Continue a CRC-32: pass 0 to start; the result of one call may seed the next (as zlib.crc32). */
static uint32_t journal_crc32(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7u)) {
        crc = (crc >> 8) ^ journal_crc_table[0][(crc ^ *p++) & 0xFFu];
        n--;
    }
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc; /* little-endian hosts only (x86-64, aarch64): the layout is little-endian too */
        crc = journal_crc_table[7][lo & 0xFFu] ^ journal_crc_table[6][(lo >> 8) & 0xFFu] ^
              journal_crc_table[5][(lo >> 16) & 0xFFu] ^ journal_crc_table[4][lo >> 24] ^
              journal_crc_table[3][hi & 0xFFu] ^ journal_crc_table[2][(hi >> 8) & 0xFFu] ^
              journal_crc_table[1][(hi >> 16) & 0xFFu] ^ journal_crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ journal_crc_table[0][(crc ^ *p++) & 0xFFu];
    return ~crc;
}

/* The checksum of the record at `at`: its 4 length bytes, then its `len` payload bytes. */
static inline uint32_t journal_record_crc(const unsigned char *base, Py_ssize_t at, uint32_t len) {
    uint32_t crc = journal_crc32(0, base + at, 4);
    return journal_crc32(crc, base + at + JOURNAL_RECORD_HEADER, (size_t)len);
}

/* ============================================================================
 * JournalSegment: a view over one mapped segment (holds the buffer while alive)
 * ============================================================================ */

typedef struct {
    PyObject_HEAD
    Py_buffer view;     /* writable buffer of the whole segment (an mmap) */
    int has_view;
    Py_ssize_t offset;  /* next record offset (writer) */
    int writable;       /* 0 for a read-only mapping: scan only */
} JournalSegmentObject;

static int journal_check_open(JournalSegmentObject *self) {
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "journal segment is released");
        return -1;
    }
    return 0;
}

static int journal_check_writable(JournalSegmentObject *self) {
    if (journal_check_open(self) < 0) return -1;
    if (!self->writable) {
        PyErr_SetString(PyExc_ValueError, "journal segment is mapped read-only");
        return -1;
    }
    return 0;
}

static int JournalSegment_init(JournalSegmentObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "offset", NULL};
    PyObject *obj;
    Py_ssize_t offset = JOURNAL_HEADER_BYTES;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n", kwlist, &obj, &offset)) return -1;
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
    self->writable = 1;
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        /* a read-only mapping (a reader): scan works, the writing methods refuse */
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, &self->view, PyBUF_C_CONTIGUOUS) < 0) return -1;
        self->writable = 0;
    }
    self->has_view = 1;
    if (((uintptr_t)self->view.buf & 7u) != 0) {
        PyErr_SetString(PyExc_ValueError, "journal segment buffer must be 8-byte aligned");
        return -1;
    }
    if (offset < JOURNAL_HEADER_BYTES || offset > self->view.len || (offset & 7) != 0) {
        PyErr_Format(PyExc_ValueError, "journal offset %zd out of range or not 8-aligned", offset);
        return -1;
    }
    self->offset = offset;
    return 0;
}

static void JournalSegment_dealloc(JournalSegmentObject *self) {
    if (self->has_view) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Phase 1: reserve room for `n` payload bytes at the current offset; -1 when it does not fit. */
static Py_ssize_t journal_reserve(JournalSegmentObject *self, Py_ssize_t n) {
    Py_ssize_t at = self->offset;
    if (n < 0 || n > (Py_ssize_t)UINT32_MAX) return -1;
    Py_ssize_t need = JOURNAL_RECORD_HEADER + journal_pad8(n);
    if (need > self->view.len - at) return -1;
    unsigned char *base = (unsigned char *)self->view.buf;
    uint64_t header = (uint64_t)(uint32_t)n; /* low word length, high word flags = 0 (LE) */
    atomic_store_explicit((_Atomic uint64_t *)(void *)(base + at), header, memory_order_relaxed);
    memset(base + at + 8, 0, 8); /* crc and reserved: set by commit */
    self->offset = at + need;
    return at;
}

/* Phase 3: checksum and publish the record at `at` (its length was stored by reserve). */
static void journal_commit(JournalSegmentObject *self, Py_ssize_t at) {
    unsigned char *base = (unsigned char *)self->view.buf;
    uint32_t len;
    memcpy(&len, base + at, 4);
    uint32_t crc = journal_record_crc(base, at, len);
    memcpy(base + at + 8, &crc, 4);
    atomic_store_explicit((_Atomic uint32_t *)(void *)(base + at + 4), JOURNAL_FLAG_COMMITTED,
                          memory_order_release);
}

static PyObject *JournalSegment_append(JournalSegmentObject *self, PyObject *arg) {
    if (journal_check_writable(self) < 0) return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t at = journal_reserve(self, data.len);
    if (at >= 0) {
        unsigned char *dst = (unsigned char *)self->view.buf + at + JOURNAL_RECORD_HEADER;
        memcpy(dst, data.buf, (size_t)data.len);
        Py_ssize_t pad = journal_pad8(data.len) - data.len;
        if (pad) memset(dst + data.len, 0, (size_t)pad);
        journal_commit(self, at);
    }
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(at);
}

static PyObject *JournalSegment_reserve(JournalSegmentObject *self, PyObject *arg) {
    if (journal_check_writable(self) < 0) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t at = journal_reserve(self, n);
    if (at >= 0) {
        Py_ssize_t pad = journal_pad8(n) - n;
        if (pad) memset((unsigned char *)self->view.buf + at + JOURNAL_RECORD_HEADER + n, 0, (size_t)pad);
    }
    return PyLong_FromSsize_t(at);
}

static PyObject *JournalSegment_commit(JournalSegmentObject *self, PyObject *arg) {
    if (journal_check_writable(self) < 0) return NULL;
    Py_ssize_t at = PyLong_AsSsize_t(arg);
    if (at == -1 && PyErr_Occurred()) return NULL;
    if (at < JOURNAL_HEADER_BYTES || at + JOURNAL_RECORD_HEADER > self->view.len || (at & 7) != 0) {
        PyErr_Format(PyExc_ValueError, "journal commit offset %zd out of range", at);
        return NULL;
    }
    uint32_t len;
    memcpy(&len, (unsigned char *)self->view.buf + at, 4);
    if ((Py_ssize_t)len > self->view.len - at - JOURNAL_RECORD_HEADER) {
        PyErr_Format(PyExc_ValueError, "journal commit at %zd: reserved length %u runs past the segment", at, len);
        return NULL;
    }
    journal_commit(self, at);
    Py_RETURN_NONE;
}

/*
 * scan(offset) -> (status, length, next_offset)
 *   status 1: committed record, payload at offset+16, `length` bytes, next record at next_offset
 *   status 0: nothing committed here (untouched, reserved-but-uncommitted, or end of segment)
 *   status -1: corrupt (unknown flag bits, a length running past the segment end, or a committed
 *              record whose crc does not match its length and payload)
 */
static PyObject *JournalSegment_scan(JournalSegmentObject *self, PyObject *arg) {
    if (journal_check_open(self) < 0) return NULL;
    Py_ssize_t at = PyLong_AsSsize_t(arg);
    if (at == -1 && PyErr_Occurred()) return NULL;
    if (at < JOURNAL_HEADER_BYTES || (at & 7) != 0) {
        PyErr_Format(PyExc_ValueError, "journal scan offset %zd out of range", at);
        return NULL;
    }
    if (at + JOURNAL_RECORD_HEADER > self->view.len) return Py_BuildValue("(inn)", 0, (Py_ssize_t)0, at);
    unsigned char *base = (unsigned char *)self->view.buf;
    uint32_t flags = atomic_load_explicit((_Atomic uint32_t *)(void *)(base + at + 4), memory_order_acquire);
    uint32_t len;
    memcpy(&len, base + at, 4);
    if (flags & ~JOURNAL_KNOWN_FLAGS) return Py_BuildValue("(inn)", -1, (Py_ssize_t)len, at);
    if (!(flags & JOURNAL_FLAG_COMMITTED)) return Py_BuildValue("(inn)", 0, (Py_ssize_t)len, at);
    if ((Py_ssize_t)len > self->view.len - at - JOURNAL_RECORD_HEADER)
        return Py_BuildValue("(inn)", -1, (Py_ssize_t)len, at);
    Py_ssize_t next = at + JOURNAL_RECORD_HEADER + journal_pad8((Py_ssize_t)len);
    if (next > self->view.len) return Py_BuildValue("(inn)", -1, (Py_ssize_t)len, at);
    uint32_t stored;
    memcpy(&stored, base + at + 8, 4);
    if (stored != journal_record_crc(base, at, len)) return Py_BuildValue("(inn)", -1, (Py_ssize_t)len, at);
    return Py_BuildValue("(inn)", 1, (Py_ssize_t)len, next);
}

static PyObject *JournalSegment_release(JournalSegmentObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *JournalSegment_get_offset(JournalSegmentObject *self, void *closure) {
    return PyLong_FromSsize_t(self->offset);
}

static PyMethodDef JournalSegment_methods[] = {
    {"append", (PyCFunction)JournalSegment_append, METH_O,
     "append(data) -> offset of the committed record, or -1 when it does not fit"},
    {"reserve", (PyCFunction)JournalSegment_reserve, METH_O,
     "reserve(n) -> offset of a reserved (uncommitted) record of n bytes, or -1"},
    {"commit", (PyCFunction)JournalSegment_commit, METH_O, "commit(offset): publish a reserved record"},
    {"scan", (PyCFunction)JournalSegment_scan, METH_O, "scan(offset) -> (status, length, next_offset)"},
    {"release", (PyCFunction)JournalSegment_release, METH_NOARGS, "release the segment buffer"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef JournalSegment_getset[] = {
    {"offset", (getter)JournalSegment_get_offset, NULL, "next record offset", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject JournalSegmentType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "byteor._native.JournalSegment",
    .tp_basicsize = sizeof(JournalSegmentObject),
    .tp_dealloc = (destructor)JournalSegment_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "JournalSegment(buffer, offset=128): append/scan records of one mapped journal segment",
    .tp_methods = JournalSegment_methods,
    .tp_getset = JournalSegment_getset,
    .tp_init = (initproc)JournalSegment_init,
    .tp_new = PyType_GenericNew,
};

/* ============================================================================
 * For native loops of other translation units (core.c's LaneGraph roles): the same two phases,
 * callable without the GIL on a segment the caller keeps a reference to
 * ============================================================================ */

int byteor_journal_segment_check(PyObject *o) {
    if (!PyObject_TypeCheck(o, &JournalSegmentType)) return 0;
    JournalSegmentObject *self = (JournalSegmentObject *)o;
    return self->has_view && self->writable;
}

Py_ssize_t byteor_journal_reserve_copy(PyObject *seg, const void *data, size_t n) {
    JournalSegmentObject *self = (JournalSegmentObject *)seg;
    Py_ssize_t at = journal_reserve(self, (Py_ssize_t)n);
    if (at >= 0) {
        unsigned char *dst = (unsigned char *)self->view.buf + at + JOURNAL_RECORD_HEADER;
        memcpy(dst, data, n);
        Py_ssize_t pad = journal_pad8((Py_ssize_t)n) - (Py_ssize_t)n;
        if (pad) memset(dst + n, 0, (size_t)pad);
    }
    return at;
}

void byteor_journal_commit_at(PyObject *seg, Py_ssize_t at) { journal_commit((JournalSegmentObject *)seg, at); }

/* ============================================================================
 * Module hook
 * ============================================================================ */

int byteor_journal_init(PyObject *module) {
    journal_crc_init();
    if (PyType_Ready(&JournalSegmentType) < 0) return -1;
    Py_INCREF(&JournalSegmentType);
    if (PyModule_AddObject(module, "JournalSegment", (PyObject *)&JournalSegmentType) < 0) {
        Py_DECREF(&JournalSegmentType);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "JOURNAL_HEADER_BYTES", JOURNAL_HEADER_BYTES) < 0) return -1;
    if (PyModule_AddIntConstant(module, "JOURNAL_FLAG_COMMITTED", JOURNAL_FLAG_COMMITTED) < 0) return -1;
    if (PyModule_AddIntConstant(module, "JOURNAL_RECORD_HEADER_BYTES", JOURNAL_RECORD_HEADER) < 0) return -1;
    if (PyModule_AddIntConstant(module, "JOURNAL_FORMAT_VERSION", JOURNAL_FORMAT_VERSION) < 0) return -1;
    return 0;
}

#ifdef BYTEOR_JOURNAL_STANDALONE
static struct PyModuleDef journal_module = {
    PyModuleDef_HEAD_INIT, "_byteor_journal", "byteor journal hot path (test build).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__byteor_journal(void) {
    PyObject *m = PyModule_Create(&journal_module);
    if (m == NULL) return NULL;
    if (byteor_journal_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
#endif
