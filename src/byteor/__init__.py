"""byteor: byte pipelines over shared-memory rings and lanes, with policy-gated side effects.

The public surface is this module's ``__all__``; everything else lives in private modules or
subpackages and may change. ``tests/test_public_api.py`` pins the list.
"""

from __future__ import annotations

from ._errors import (
    ActionFailed,
    AdapterError,
    ApprovalError,
    ArtifactError,
    ByteorError,
    DataGuardError,
    PipelineFailed,
    PolicyRefused,
    ShmError,
    SpecDecodeError,
    SpecError,
    SpecIssue,
    SpecValidationError,
    UnsupportedSpecError,
    UsageError,
)
from ._version import distribution_version
from .spec import (
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    PipelineSpecV1,
    RoleV1,
    SingleRingSpecV1,
    StageV1,
    canonical_bytes,
    decode_kv,
    encode_kv,
    load_spec_file,
    spec_hash,
)

__version__ = distribution_version()

__all__ = [
    "ActionFailed",
    "AdapterError",
    "ApprovalError",
    "ArtifactError",
    "ByteorError",
    "BytesKey",
    "DataGuardError",
    "EndpointV1",
    "LaneGraphSpecV1",
    "LaneV1",
    "PipelineFailed",
    "PipelineSpecV1",
    "PolicyRefused",
    "RoleV1",
    "ShmError",
    "SingleRingSpecV1",
    "SpecDecodeError",
    "SpecError",
    "SpecIssue",
    "SpecValidationError",
    "StageV1",
    "UnsupportedSpecError",
    "UsageError",
    "__version__",
    "canonical_bytes",
    "decode_kv",
    "encode_kv",
    "load_spec_file",
    "spec_hash",
]
