/*
 * What the translation units of byteor._native share (core.c, journal.c, dataguard.c, framing.c):
 * one Python.h configuration, the module-init hook of each area, and the few functions one area
 * calls in another. Each area keeps its own state static; core.c's PyInit__native calls the hooks.
 */
#ifndef BYTEOR_NATIVE_H
#define BYTEOR_NATIVE_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* journal.c: the JournalSegment type and the JOURNAL_* constants */
int byteor_journal_init(PyObject *module);
/* 1 when o is a JournalSegment that holds a writable segment */
int byteor_journal_segment_check(PyObject *o);
/* Phases 1 and 2 of an append (reserve, copy, zero the pad): the record's offset, or -1 when it does
 * not fit. Phase 3 (byteor_journal_commit_at) publishes it. No GIL needed; one caller at a time. */
Py_ssize_t byteor_journal_reserve_copy(PyObject *seg, const void *data, size_t n);
void byteor_journal_commit_at(PyObject *seg, Py_ssize_t at);
/* dataguard.c: the DgPlan type */
int byteor_dataguard_init(PyObject *module);

/* framing.c: codecs of the file framings and the shard hash (pure; callable without the GIL) */
int byteor_framing_init(PyObject *module); /* crc32(), utf8_replace(); fills the tables */
uint32_t byteor_crc32(uint32_t crc, const unsigned char *p, size_t n); /* zlib.crc32 */
size_t byteor_hex_encode(const unsigned char *p, size_t n, unsigned char *out); /* 2n bytes, lowercase */
#define BYTEOR_HEX_OK 0
#define BYTEOR_HEX_BLANK 1    /* only whitespace: no message */
#define BYTEOR_HEX_BAD_CHAR 2 /* *bad = the first byte that is neither whitespace nor a hex digit */
#define BYTEOR_HEX_ODD 3      /* *digits hex digits, an odd number */
#define BYTEOR_HEX_TOO_LONG 4 /* decodes to *out_len > cap bytes */
/* Decode one line of hex (whitespace ignored, as "".join(line.decode("ascii", "replace").split())
 * and bytes.fromhex) into out[0..cap); a BYTEOR_HEX_* code. */
int byteor_hex_line(const unsigned char *line, size_t n, unsigned char *out, size_t cap, size_t *out_len,
                    int *bad, size_t *digits);
/* p[0..n) as bytes.decode("utf-8", "replace").encode("utf-8") into out (room for 3n); the length. */
size_t byteor_utf8_replace(const unsigned char *p, size_t n, unsigned char *out);

#endif /* BYTEOR_NATIVE_H */
