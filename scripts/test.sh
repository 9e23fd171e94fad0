#!/usr/bin/env bash
# The whole test suite, as CI runs it: venv + install, real services up, lint, types, tests, the
# sanitizer build of the native tests and fuzz targets, the tests again under the newest CPython
# (~/.pyenv/versions/3.13.0, or $PY_NEWEST), and a quick smoke run of every benchmark.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "test,bench"

echo "==> services"
if [ "$(id -u)" = 0 ]; then
  bash scripts/ensure-services.sh
else
  CHECK_ONLY=1 bash scripts/ensure-services.sh
fi

echo "==> Debian packages the tests use"
# prometheus: the metrics test scrapes a running pipeline with a real server it starts itself;
# graphviz: `dot` draws the console's topology; chromium: the browser the console tests drive
# (through Playwright, which is told where it is: `playwright install` is never run)
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]} (install as root: apt-get install -y ${need[*]}); their tests will fail" >&2
  fi
fi

echo "==> ruff"
ruff check src tests benchmarks
echo "==> mypy --strict src/"
mypy

# Three workers on two cores: most tests spend their time waiting on child processes, brokers and
# timers, so a third worker fills the idle time (about 10 minutes serial, under 5 in parallel here).
# Whole files go to one worker: tests of one file often run the same spec, and a run without
# --ring-path takes the spec's default ring directory, which a concurrent run of it would hold.
# PYTEST_WORKERS=0 runs them serially in this process.
WORKERS="${PYTEST_WORKERS:-3}"
xdist=(-n "$WORKERS" --dist loadfile)
[ "$WORKERS" = 0 ] && xdist=(-p no:xdist)

echo "==> pytest (${WORKERS} workers)"
set +e
python -m pytest -q -p no:cacheprovider "${xdist[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
[ "$rc" = 0 ] || exit "$rc"

if [ -x .ci/sanitize.sh ]; then
  echo "==> native tests and fuzz targets under ASan/UBSan"
  bash .ci/sanitize.sh -n 2
fi

# Again under the newest CPython here, in its own venv: the extension has version-specific code (and
# Python's own behaviour moves: 3.13 verifies certificates more strictly, for one). By default the
# tests that exercise the native core, the journal, shared memory, the stage forms, TLS and the
# multi-process executor (~1 min); NEWEST_FULL=1 runs the whole suite (about 5 minutes more, which
# takes the whole run past its 15-minute budget on 2 cores).
PY_NEWEST="${PY_NEWEST:-$HOME/.pyenv/versions/3.13.0/bin/python3}"
if [ -x "$PY_NEWEST" ]; then
  echo "==> pytest under $("$PY_NEWEST" --version) (.venv-3.13)"
  [ -x .venv-3.13/bin/python ] || "$PY_NEWEST" -m venv .venv-3.13
  .venv-3.13/bin/python -m pip install -q --upgrade pip 'setuptools>=77' wheel
  .venv-3.13/bin/python -m pip install -q -e '.[test]'
  newest_tests=(tests/test_native_*.py tests/test_journal_*.py tests/test_dataguard_native.py tests/test_lanes_shm.py
                tests/test_shm_layer.py tests/test_policy_keys.py tests/test_integration_run.py tests/test_stage_forms.py)
  [ "${NEWEST_FULL:-0}" = 1 ] && newest_tests=()
  set +e
  .venv-3.13/bin/python -m pytest -q -p no:cacheprovider -n 2 "${newest_tests[@]}"
  rc=$?
  set -e
  [ "$rc" = 0 ] || exit "$rc"
else
  echo "==> no newest CPython at $PY_NEWEST (set PY_NEWEST): the 3.13 run is skipped" >&2
fi

echo "==> benchmark smoke (--quick; speed is reported, not asserted)"
for b in benchmarks/*.py; do
  name="$(basename "$b" .py)"
  case "$name" in _*|__init__) continue ;; esac
  echo "--> benchmarks.$name --quick"
  timeout 300 python -m "benchmarks.$name" --quick
done
echo "==> all green"
