"""Python modules generated from byteor_edge.proto by scripts/gen-grpc.sh (do not edit them)."""
