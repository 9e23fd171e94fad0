"""The public surfaces of byteor.artifacts, byteor.ops and byteor.replay are pinned here."""

from __future__ import annotations

import byteor.artifacts
import byteor.ops
import byteor.replay

ARTIFACTS = {
    "BundleRequest",
    "BundleResult",
    "CONDITIONAL_FILES",
    "EnvironmentRecord",
    "IncidentBundle",
    "MANIFEST",
    "REDACTED",
    "REQUIRED_FILES",
    "ReplayAudit",
    "ReplayAuditAction",
    "ReplayAuditInput",
    "ReplayAuditOutcome",
    "ReplayAuditPolicy",
    "RuntimeInfo",
    "SpecValidation",
    "capture_environment",
    "capture_process_environment",
    "check_version",
    "create_incident_bundle",
    "extract_bundle_tar",
    "is_secret_name",
    "read_environment",
    "read_incident_bundle",
    "read_json_object",
    "read_manifest",
    "read_replay_audit",
    "read_runtime",
    "read_spec_validation",
    "redact_env",
    "redact_value",
    "runtime_info",
    "write_environment",
    "write_json",
    "write_replay_audit",
    "write_runtime",
    "write_spec_validation",
}
OPS = {
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "KnobState",
    "PROFILES",
    "RuntimeConfig",
    "TuningReport",
    "apply_profile",
    "decode_runtime_config",
    "encode_runtime_config",
    "plan_profile",
    "probe_tuning",
    "read_runtime_config",
    "record_tuning",
    "run_doctor",
    "spec_shm_bytes",
    "tune_process",
    "write_runtime_config",
}
REPLAY = {"MODES", "ReplayRequest", "ReplayResult", "ReplayStopped", "run_replay", "select_records"}


def test_public_surfaces_are_pinned() -> None:
    for module, expected in ((byteor.artifacts, ARTIFACTS), (byteor.ops, OPS), (byteor.replay, REPLAY)):
        assert set(module.__all__) == expected, module.__name__
        assert len(module.__all__) == len(expected), f"{module.__name__}: duplicate in __all__"
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
