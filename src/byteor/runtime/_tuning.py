"""Tuning profiles in the runtime processes (glue between ``run`` and :mod:`byteor.ops.tuning`).

``run`` builds one :class:`TuningPlan` (profile, the runtime config with command-line overrides,
the number of pipeline processes) and hands its JSON to every stage/role process; each process calls
:func:`tune_this_process` once before its loop: the profile is applied (or, with no profile, the
``default`` one, which changes nothing), every knob is logged on stderr (with no profile given only
knobs that are not ``Applied``) and recorded under ``tuning.<role>.*`` in
``<ring or lane dir>/runtime_config.txt``. The run removes that file and its ``.lock`` when it ends.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import Any

from ..obs.events import emit
from ..ops.runtime_config import RuntimeConfig, decode_runtime_config, encode_runtime_config
from ..ops.tuning import TuningReport

__all__ = ["RUNTIME_CONFIG_FILE", "TuningPlan", "knobs_json", "read_tuning", "remove_runtime_config",
           "tune_this_process"]

RUNTIME_CONFIG_FILE = "runtime_config.txt"


@dataclass(frozen=True)
class TuningPlan:
    """What every runtime process of one run applies. ``profile`` None: none was asked for."""

    profile: str | None
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    #: processes of the pipeline that may spin (stage/role processes + the producer process)
    spinning_peers: int | None = None
    #: the tuning role of every stage/role process, in placement order: CPUs are balanced across them
    roles: tuple[str, ...] = ()
    #: filled by the runner when the run ends: role -> knob states the processes recorded
    effective: dict[str, list[dict[str, str]]] = field(default_factory=dict, compare=False)

    def wait(self, default: str = "backoff") -> str:
        """The wait strategy the run uses: the profile's (after config/command-line overrides, and
        ``spin`` degraded to ``backoff`` when more processes would spin than there are usable CPUs,
        exactly as :func:`~byteor.ops.tuning.apply_profile` reports it), else the configured one."""
        if self.profile is None:
            return self.config.wait or default
        from ..ops.tuning import profile_request

        req = profile_request(self.profile, self.config)
        if (req.wait == "spin" and self.spinning_peers is not None
                and self.spinning_peers > len(os.sched_getaffinity(0))):
            return "backoff"
        return req.wait

    def to_json(self, record_to: str | None) -> dict[str, Any]:
        return {"profile": self.profile, "config": encode_runtime_config(replace(self.config, effective={})),
                "spinning_peers": self.spinning_peers, "record_to": record_to, "roles": list(self.roles)}


def tune_this_process(raw: dict[str, Any] | None, role: str) -> tuple[str | None, TuningReport | None]:
    """Apply the plan ``raw`` (:meth:`TuningPlan.to_json`) to this process as ``role``; log and record
    the knobs. Returns ``(wait, report)``: ``wait`` is the strategy to use when a profile was given,
    else None (keep the configured one); both None when ``raw`` is None."""
    if raw is None:
        return None, None
    from ..ops.tuning import tune_process

    profile = raw.get("profile")
    config = decode_runtime_config(raw["config"], path="runtime config")
    quiet = profile is None

    report = tune_process(profile, role=role, config=config,
                          spinning_peers=raw.get("spinning_peers") if profile is not None else None,
                          record_to=raw.get("record_to"), roles=raw.get("roles") or None)
    for knob, line in zip(report.knobs, report.log_lines(), strict=True):
        applied = knob.state == "Applied"
        level = "warning" if not applied else "debug" if quiet else "info"  # no profile asked: routine
        emit("tuning.knob", line, level=level,
             profile=report.profile, role=role, knob=knob.knob, requested=knob.requested, applied=knob.applied,
             state=knob.state, reason=knob.reason)
    return (report.wait if profile is not None else None), report


def knobs_json(report: TuningReport) -> list[dict[str, str]]:
    return [{"knob": k.knob, "requested": k.requested, "applied": k.applied, "state": k.state,
             "reason": k.reason} for k in report.knobs]


def remove_runtime_config(directory: str) -> None:
    """Unlink ``runtime_config.txt`` and its ``.lock`` in ``directory`` (clean exit)."""
    base = os.path.join(directory, RUNTIME_CONFIG_FILE)
    for path in (base, base + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def read_tuning(directory: str) -> dict[str, list[dict[str, str]]] | None:
    """The effective tuning recorded in ``directory/runtime_config.txt`` (role -> knob dicts), or
    None when there is no such file. A malformed file is a UsageError naming line and key."""
    if os.path.isfile(directory):  # a ring file given as --ring-path: its directory holds the record
        directory = os.path.dirname(os.path.abspath(directory))
    path = os.path.join(directory, RUNTIME_CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    from ..ops.runtime_config import read_runtime_config

    cfg = read_runtime_config(path)
    return {role: [{"knob": k.knob, "requested": k.requested, "applied": k.applied, "state": k.state,
                    "reason": k.reason} for k in knobs]
            for role, knobs in cfg.effective.items()}
