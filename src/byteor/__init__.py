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
from .runtime import Pipeline
from .spec import (
    BytesKey,
    CompileReportV1,
    EndpointV1,
    LaneGraphBuilder,
    LaneGraphPlanV2,
    LaneGraphSpecV1,
    LaneV1,
    PipelinePlanV2,
    PipelineSpecV1,
    RoleV1,
    SingleRingBuilder,
    SingleRingPlanV2,
    SingleRingSpecV1,
    StageV1,
    canonical_bytes,
    check_v1,
    decode_kv,
    encode_kv,
    load_spec_file,
    lower_v2,
    single_ring_chain,
    spec_hash,
    spec_summary,
    validate_v1,
)

__version__ = distribution_version()

__all__ = [
    "ActionFailed",
    "AdapterError",
    "ApprovalError",
    "ArtifactError",
    "ByteorError",
    "BytesKey",
    "CompileReportV1",
    "DataGuardError",
    "EndpointV1",
    "LaneGraphBuilder",
    "LaneGraphPlanV2",
    "LaneGraphSpecV1",
    "LaneV1",
    "Pipeline",
    "PipelineFailed",
    "PipelinePlanV2",
    "PipelineSpecV1",
    "PolicyRefused",
    "RoleV1",
    "ShmError",
    "SingleRingBuilder",
    "SingleRingPlanV2",
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
    "check_v1",
    "decode_kv",
    "encode_kv",
    "load_spec_file",
    "lower_v2",
    "single_ring_chain",
    "spec_hash",
    "spec_summary",
    "validate_v1",
]
