"""The curated public surface: ``byteor.__all__`` is sorted, complete and importable."""

from __future__ import annotations

import byteor


def test_all_is_sorted_and_unique() -> None:
    # isort style (what ruff enforces): CONSTANTS, then Classes, then functions, each alphabetical
    names = [n for n in byteor.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert len(set(byteor.__all__)) == len(byteor.__all__)


def test_every_exported_name_exists() -> None:
    for name in byteor.__all__:
        assert hasattr(byteor, name), name


def test_exceptions_share_one_root() -> None:
    exported = [getattr(byteor, n) for n in byteor.__all__]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert errors
    for exc in errors:
        assert issubclass(exc, byteor.ByteorError), exc
    assert issubclass(byteor.SpecError, ValueError)
    assert issubclass(byteor.SpecValidationError, byteor.SpecError)
    assert issubclass(byteor.SpecDecodeError, byteor.SpecError)


def test_exit_codes_match_the_documented_table() -> None:
    assert byteor.SpecError.exit_code == 3
    assert byteor.UsageError.exit_code == 2
    assert byteor.PolicyRefused.exit_code == 4
    assert byteor.ApprovalError.exit_code == 4
    assert byteor.PipelineFailed.exit_code == 1


def test_version_is_the_installed_distribution() -> None:
    from importlib import metadata

    assert byteor.__version__ == metadata.version("byteor")


#: The curated surface, pinned: adding or removing a public name is a deliberate change made here.
PUBLIC = {
    # errors
    "ActionFailed", "AdapterError", "ApprovalError", "ArtifactError", "ByteorError", "DataGuardError",
    "PipelineFailed", "PolicyRefused", "ShmError", "SpecDecodeError", "SpecError", "SpecIssue",
    "SpecValidationError", "StageContractError", "UnsafePathError", "UnsupportedSpecError", "UsageError",
    # specs: model, codec, validation, builders, plans
    "BytesKey", "CompileReportV1", "EndpointV1", "LaneGraphBuilder", "LaneGraphPlanV2", "LaneGraphSpecV1",
    "LaneV1", "PipelinePlanV2", "PipelineSpecV1", "RoleV1", "SingleRingBuilder", "SingleRingPlanV2",
    "SingleRingSpecV1", "StageV1", "canonical_bytes", "check_v1", "decode_kv", "encode_kv", "load_spec_file",
    "lower_v2", "single_ring_chain", "spec_hash", "spec_summary", "validate_v1",
    # the stage contract plugins and stage authors need
    "DROP", "ResolvedStage", "StageContext", "py_key", "stage", "stage_form",
    # running: the session, the Pipeline API over it, the edges
    "Batch", "Pipeline", "RunOptions", "RunSession", "Sink", "Source",
    "__version__",
}


def test_all_is_exactly_the_curated_surface() -> None:
    assert set(byteor.__all__) == PUBLIC
