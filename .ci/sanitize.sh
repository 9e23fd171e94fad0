#!/usr/bin/env bash
# sanitize.sh: build byteor._native with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch
# copy of the sources (the working tree's extension is never touched) and run the native tests
# (ring, journal and DataGuard kernels) and the fuzz targets (tests/test_native_fuzz.py: ring attach,
# journal reading, USM1/DataGuard rules, spec.kv; BYTEOR_FUZZ_EXAMPLES examples each, default 1500)
# against that build, with the sanitizer runtimes preloaded into python and every child process.
# Any ASan report or UBSan diagnostic fails the run. Uses the project venv's python (or $PYTHON).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CC_BIN="${CC:-gcc}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/byteor-sanitize.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "==> copying sources to $WORK"
mkdir -p "$WORK/src"
cp -r "$ROOT/src/byteor" "$WORK/src/"
cp "$ROOT/setup.py" "$ROOT/pyproject.toml" "$WORK/"
[ -f "$ROOT/README.md" ] && cp "$ROOT/README.md" "$WORK/"
cp -r "$ROOT/tests" "$WORK/tests"
find "$WORK" -name '*.so' -delete
find "$WORK" -name '__pycache__' -type d -prune -exec rm -rf {} +

echo "==> building byteor._native with BYTEOR_SANITIZE=1"
(cd "$WORK" && BYTEOR_SANITIZE=1 "$PY" setup.py -q build_ext --inplace --build-temp "$WORK/build" >/dev/null)

ASAN_LIB="$("$CC_BIN" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CC_BIN" -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
  [ -e "$lib" ] || { echo "sanitize.sh: $lib not found (install the gcc sanitizer runtimes)" >&2; exit 1; }
done

# The build under test must be the one imported (PYTHONPATH precedes the editable install's path).
export PYTHONPATH="$WORK/src"
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export PYTHONMALLOC=malloc            # let ASan see every Python allocation
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export BYTEOR_FUZZ_EXAMPLES="${BYTEOR_FUZZ_EXAMPLES:-1500}"
where="$("$PY" -c 'import byteor._native as n; print(n.__file__)')"
case "$where" in
  "$WORK"/*) echo "==> testing $where" ;;
  *) echo "sanitize.sh: imported $where instead of the sanitized build" >&2; exit 1 ;;
esac

cd "$WORK"
timeout 600 "$PY" -m pytest -q -p no:cacheprovider tests/test_native_*.py tests/test_journal_format.py \
  tests/test_journal_integrity.py tests/test_dataguard_native.py "$@"
echo "==> sanitized native tests passed"
