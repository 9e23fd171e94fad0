#!/usr/bin/env bash
# Regenerate the checked-in gRPC modules of src/byteor/adapters/_grpc from byteor_edge.proto.
# Needs grpcio-tools (in the bench extra): . scripts/_venv.sh "test,bench" && scripts/gen-grpc.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/src"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. byteor/adapters/_grpc/byteor_edge.proto
echo "generated: $(cd "$ROOT" && ls src/byteor/adapters/_grpc/byteor_edge_pb2*)"
