"""byteor: byte pipelines over shared-memory rings and lanes, with policy-gated side effects.

The public surface is this module's ``__all__``; everything else lives in private modules or
subpackages and may change. ``tests/test_public_api.py`` pins the list.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    StageContractError,
    UnsafePathError,
    UnsupportedSpecError,
    UsageError,
)
from ._stage import DROP, ResolvedStage, StageContext, py_key, stage, stage_form
from .edges import Batch, Sink, Source
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

if TYPE_CHECKING:
    from .runtime import Pipeline
    from .runtime.session import RunOptions, RunSession

    __version__: str

#: Names loaded on first use: the run session pulls in the policy gate and its HTTP client, and the
#: version the package metadata machinery, none of which the stage and role processes (they import
#: this package first) need before their ring starts flowing.
_LAZY = {"Pipeline": ".runtime.pipeline", "RunOptions": ".runtime.session", "RunSession": ".runtime.session"}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import distribution_version

        value: Any = distribution_version()
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "DROP",
    "ActionFailed",
    "AdapterError",
    "ApprovalError",
    "ArtifactError",
    "Batch",
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
    "ResolvedStage",
    "RoleV1",
    "RunOptions",
    "RunSession",
    "ShmError",
    "SingleRingBuilder",
    "SingleRingPlanV2",
    "SingleRingSpecV1",
    "Sink",
    "Source",
    "SpecDecodeError",
    "SpecError",
    "SpecIssue",
    "SpecValidationError",
    "StageContext",
    "StageContractError",
    "StageV1",
    "UnsafePathError",
    "UnsupportedSpecError",
    "UsageError",
    "__version__",
    "canonical_bytes",
    "check_v1",
    "decode_kv",
    "encode_kv",
    "load_spec_file",
    "lower_v2",
    "py_key",
    "single_ring_chain",
    "spec_hash",
    "spec_summary",
    "stage",
    "stage_form",
    "validate_v1",
]
