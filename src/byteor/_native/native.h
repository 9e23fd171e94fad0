/*
 * What the translation units of byteor._native share (core.c, journal.c, dataguard.c): one
 * Python.h configuration and the module-init hook of each area. Each area keeps its own state
 * static; core.c's PyInit__native calls the hooks.
 */
#ifndef BYTEOR_NATIVE_H
#define BYTEOR_NATIVE_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* journal.c: the JournalSegment type and the JOURNAL_* constants */
int byteor_journal_init(PyObject *module);
/* dataguard.c: the DgPlan type */
int byteor_dataguard_init(PyObject *module);

#endif /* BYTEOR_NATIVE_H */
