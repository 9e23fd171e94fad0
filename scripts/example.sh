#!/usr/bin/env bash
# byteor's main job on a bundled example: validate and describe a pipeline, then run it across
# processes over shared memory (one process per stage) on 1,000,000 generated messages.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" ""
spec="${1:-examples/chain.kv}"
n="${N:-1000000}"
out="$(mktemp -d)/out.hex"

echo "==> byteor validate $spec"
byteor validate "$spec"
echo "==> byteor describe $spec"
byteor describe "$spec"
echo "==> one message through the stages in this process (--sp)"
byteor run "$spec" --sp --input-ascii=hello --output=ascii
echo "==> $n messages through the multi-process pipeline (one process per stage, futex waits)"
python -c "import sys; sys.stdout.writelines(f'msg-{i:08d}\n' for i in range($n))" |
  byteor run "$spec" --input=- --input-format=lines --output-file="$out" --wait=block
echo "==> $(wc -l < "$out") output messages in $out; the last one as text (every byte +1, from the add_u8 stage):"
tail -n 1 "$out" | python -c "import sys; print(bytes.fromhex(sys.stdin.read().strip()).decode())"
