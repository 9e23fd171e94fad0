"""The spec layer: model, KV codec, canonical form and hash, validation, builders, plans."""

from __future__ import annotations

from .kv import MAX_SPEC_BYTES, canonical_bytes, decode_kv, encode_kv, load_spec_file, spec_hash
from .model import (
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    PipelineSpecV1,
    RoleV1,
    SingleRingSpecV1,
    StageV1,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "BytesKey",
    "EndpointV1",
    "LaneGraphSpecV1",
    "LaneV1",
    "PipelineSpecV1",
    "RoleV1",
    "SingleRingSpecV1",
    "StageV1",
    "canonical_bytes",
    "decode_kv",
    "encode_kv",
    "load_spec_file",
    "spec_hash",
]
