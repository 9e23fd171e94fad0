/*
 * byteor._native: the C core (shared-memory rings and lanes, builtin kernels).
 *
 * ============================================================================
 * Module
 * ============================================================================
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define BYTEOR_NATIVE_ABI 1

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "byteor._native", "byteor's C core.", -1, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", BYTEOR_NATIVE_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
