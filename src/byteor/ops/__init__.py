"""Host operations: ``doctor`` checks, tuning profiles and the ``runtime_config.txt`` file."""

from __future__ import annotations

from .doctor import Check, DoctorOptions, DoctorReport, probe_tuning, run_doctor, spec_shm_bytes
from .runtime_config import (
    KnobState,
    RuntimeConfig,
    decode_runtime_config,
    encode_runtime_config,
    read_runtime_config,
    write_runtime_config,
)
from .tuning import PROFILES, TuningReport, apply_profile, plan_profile, record_tuning, tune_process

__all__ = [
    "PROFILES",
    "Check",
    "DoctorOptions",
    "DoctorReport",
    "KnobState",
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
]
