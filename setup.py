"""Build the one native extension, ``byteor._native``, with the machine's C compiler.

Switches (environment variables read at build time):

* ``BYTEOR_DEBUG=1``    -O0 -g, assertions on.
* ``BYTEOR_SANITIZE=1`` adds AddressSanitizer and UndefinedBehaviorSanitizer (implies debug);
  run the tests with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

debug = os.environ.get("BYTEOR_DEBUG") == "1"
sanitize = os.environ.get("BYTEOR_SANITIZE") == "1"

# -fvisibility=hidden: the translation units share functions through native.h; only PyInit__native
# (PyMODINIT_FUNC marks it visible) is exported from the shared object.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing",
                      "-fvisibility=hidden"]
extra_link_args: list[str] = []
undef_macros: list[str] = []
if debug or sanitize:
    extra_compile_args += ["-O0", "-g3"]
    undef_macros.append("NDEBUG")
else:
    extra_compile_args += ["-O3"]
if sanitize:
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += flags
    extra_link_args += flags

setup(
    ext_modules=[
        Extension(
            "byteor._native",
            sources=["src/byteor/_native/core.c", "src/byteor/_native/journal.c",
                     "src/byteor/_native/dataguard.c", "src/byteor/_native/framing.c"],
            depends=["src/byteor/_native/native.h"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            undef_macros=undef_macros,
        )
    ]
)
