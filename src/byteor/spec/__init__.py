"""The spec layer: model, KV codec, canonical form and hash, validation, builders, plans.

* :mod:`.model`: frozen v1 value objects (``PipelineSpecV1`` = SingleRing | LaneGraph).
* :mod:`.kv`: ``decode_kv`` (fail closed), ``encode_kv`` (canonical), ``spec_hash``.
* :mod:`.validate`: ``validate_v1`` / ``check_v1`` (every validation rule, each issue with its key).
* :mod:`.families`: resolver stage-key families and their syntax.
* :mod:`.semantics`: ``effective_deps`` for concurrent SingleRing execution.
* :mod:`.builders`: ``SingleRingBuilder``, ``single_ring_chain``, ``LaneGraphBuilder``.
* :mod:`.plan`: ``PipelinePlanV2``, ``lower_v2``, ``CompileReportV1``.
* :mod:`.summary`, :mod:`.dot`, :mod:`.diff`: operator views.
"""

from __future__ import annotations

from .builders import LaneGraphBuilder, SingleRingBuilder, single_ring_chain
from .diff import DiffEntry, spec_diff
from .dot import to_dot
from .families import check_resolver_key, known_families
from .kv import (
    MAX_SPEC_BYTES,
    canonical_bytes,
    canonical_pairs,
    decode_kv,
    encode_kv,
    load_spec_file,
    spec_hash,
)
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
from .plan import (
    CompileDiagnosticV1,
    CompileReportV1,
    LaneGraphPlanV2,
    PipelinePlanV2,
    PlanBoundaryV2,
    PlanConnectionV2,
    PlanLaneStageV2,
    PlanStageV2,
    SingleRingPlanV2,
    lower_v2,
    read_compile_report,
)
from .semantics import effective_deps, implicit_orderings
from .summary import spec_summary
from .validate import check_v1, validate_v1

__all__ = [
    "MAX_SPEC_BYTES",
    "BytesKey",
    "CompileDiagnosticV1",
    "CompileReportV1",
    "DiffEntry",
    "EndpointV1",
    "LaneGraphBuilder",
    "LaneGraphPlanV2",
    "LaneGraphSpecV1",
    "LaneV1",
    "PipelinePlanV2",
    "PipelineSpecV1",
    "PlanBoundaryV2",
    "PlanConnectionV2",
    "PlanLaneStageV2",
    "PlanStageV2",
    "RoleV1",
    "SingleRingBuilder",
    "SingleRingPlanV2",
    "SingleRingSpecV1",
    "StageV1",
    "canonical_bytes",
    "canonical_pairs",
    "check_resolver_key",
    "check_v1",
    "decode_kv",
    "effective_deps",
    "encode_kv",
    "implicit_orderings",
    "known_families",
    "load_spec_file",
    "lower_v2",
    "read_compile_report",
    "single_ring_chain",
    "spec_diff",
    "spec_hash",
    "spec_summary",
    "to_dot",
    "validate_v1",
]
