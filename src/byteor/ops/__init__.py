"""Host operations: ``doctor`` checks, tuning profiles and the ``runtime_config.txt`` file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .runtime_config import (
    KnobState,
    RuntimeConfig,
    decode_runtime_config,
    encode_runtime_config,
    read_runtime_config,
    write_runtime_config,
)
from .tuning import PROFILES, TuningReport, apply_profile, plan_profile, record_tuning, tune_process

if TYPE_CHECKING:
    from .doctor import Check, DoctorOptions, DoctorReport, probe_tuning, run_doctor, spec_shm_bytes

_DOCTOR_NAMES = frozenset({"Check", "DoctorOptions", "DoctorReport", "probe_tuning", "run_doctor", "spec_shm_bytes"})


def __getattr__(name: str) -> Any:
    # doctor pulls in the policy modules (and httpx); tuned runtime processes import this package at
    # start-up and never need it, so it is loaded on first use only.
    if name in _DOCTOR_NAMES:
        from . import doctor

        return getattr(doctor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
