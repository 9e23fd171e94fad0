# Sourced by scripts/example.sh and scripts/test.sh: make (or reuse) .venv and install byteor into it.
# Usage: . scripts/_venv.sh EXTRAS   (e.g. "test,bench"; empty for the plain package)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 'setuptools>=77' wheel
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "==> installing byteor${extras:+[$extras]} (builds the C extension with $(gcc --version | head -1))"
python -m pip install -q -e "$spec"
