#!/usr/bin/env bash
# byteor's main job on a bundled example: JSON orders go through two plain Python stages (parse and
# enrich, then keep the valuable ones), validated, described, run once in this process, then run
# across processes over shared memory (one process per stage) on 200,000 generated orders.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" ""
spec="${1:-examples/orders/orders.kv}"
n="${N:-200000}"
out="$(mktemp -d)/orders.out"

echo "==> byteor validate $spec"
byteor validate "$spec"
echo "==> byteor describe $spec"
byteor describe "$spec"
echo "==> one order through the stages in this process (--sp)"
byteor run "$spec" --sp --input-ascii='{"id": 1, "sku": "fig", "qty": 12, "price": 9.5}' --output=ascii
echo "==> $n orders through the multi-process pipeline (one process per stage, futex waits)"
python examples/orders/generate.py "$n" |
  byteor run "$spec" --input=- --input-format=lines --output=lines --output-file="$out" --wait=block
echo "==> $(wc -l < "$out") orders kept in $out (broken lines and orders under 20 were dropped); the last one:"
tail -n 1 "$out"
