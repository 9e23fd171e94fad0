#!/usr/bin/env bash
# The whole test suite, as CI runs it: venv + install, real services up, lint, types, tests,
# the sanitizer build of the native tests, and a quick smoke run of every benchmark.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "test,bench"

echo "==> services"
if [ "$(id -u)" = 0 ]; then
  bash scripts/ensure-services.sh
else
  CHECK_ONLY=1 bash scripts/ensure-services.sh
fi

echo "==> Debian packages the tests use"
# prometheus: the metrics test scrapes a running pipeline with a real server it starts itself
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
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

echo "==> pytest"
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
[ "$rc" = 0 ] || exit "$rc"

if [ -x .ci/sanitize.sh ]; then
  echo "==> native tests under ASan/UBSan"
  bash .ci/sanitize.sh
fi

echo "==> benchmark smoke (--quick; speed is reported, not asserted)"
for b in benchmarks/*.py; do
  name="$(basename "$b" .py)"
  case "$name" in _*|__init__) continue ;; esac
  echo "--> benchmarks.$name --quick"
  timeout 300 python -m "benchmarks.$name" --quick
done
echo "==> all green"
