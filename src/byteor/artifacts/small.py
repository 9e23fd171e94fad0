"""``spec_validation.json`` and ``runtime.json`` (v1): the two small bundle files.

``spec_validation.json``: ``ok`` (bool), ``description`` (string, when ``ok``), ``error`` (string,
when not ``ok``), plus the additive ``validation_v``. ``runtime.json``: ``{"crate": {"name":
"byteor", "version": <installed distribution version>}}`` plus the additive ``runtime_v``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._errors import ArtifactError
from .._json import check_version, read_json_object, require, write_json
from .._version import DISTRIBUTION, distribution_version

__all__ = [
    "RuntimeInfo",
    "SpecValidation",
    "read_runtime",
    "read_spec_validation",
    "runtime_info",
    "write_runtime",
    "write_spec_validation",
]


@dataclass(frozen=True)
class SpecValidation:
    """The verdict on a bundle's spec: ``description`` when ok, ``error`` when not."""

    ok: bool
    description: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.ok and self.description is None:
            raise ValueError("a successful SpecValidation needs a description")
        if not self.ok and self.error is None:
            raise ValueError("a failed SpecValidation needs an error")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"validation_v": 1, "ok": self.ok}
        if self.ok:
            out["description"] = self.description
        else:
            out["error"] = self.error
        return out


def write_spec_validation(path: str | os.PathLike[str], value: SpecValidation) -> None:
    write_json(path, value.to_json())


def read_spec_validation(path: str | os.PathLike[str]) -> SpecValidation:
    p = os.fspath(path)
    obj = read_json_object(p, artifact="spec_validation")
    check_version(obj, artifact="spec_validation", field="validation_v", path=p)
    ok = require(obj, "ok", bool, path=p)
    if ok:
        return SpecValidation(True, description=require(obj, "description", str, path=p))
    return SpecValidation(False, error=require(obj, "error", str, path=p))


@dataclass(frozen=True)
class RuntimeInfo:
    """``runtime.json``: which byteor produced the bundle."""

    name: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {"runtime_v": 1, "crate": {"name": self.name, "version": self.version}}


def runtime_info() -> RuntimeInfo:
    """This process's runtime identity: the installed ``byteor`` distribution and its version."""
    return RuntimeInfo(DISTRIBUTION, distribution_version())


def write_runtime(path: str | os.PathLike[str], value: RuntimeInfo | None = None) -> None:
    write_json(path, (value or runtime_info()).to_json())


def read_runtime(path: str | os.PathLike[str]) -> RuntimeInfo:
    p = os.fspath(path)
    obj = read_json_object(p, artifact="runtime")
    check_version(obj, artifact="runtime", field="runtime_v", path=p)
    crate = require(obj, "crate", dict, path=p)
    name = crate.get("name")
    version = crate.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise ArtifactError(f"{p}: fields `crate.name` and `crate.version` must be strings")
    return RuntimeInfo(name, version)
