"""The versioned-JSON helper every byteor artifact reader and writer goes through.

Writers produce UTF-8 JSON with a trailing newline and write it atomically (temporary file in the
same directory, then ``rename``), or *exclusively* (``O_EXCL``: an existing file is never replaced),
which the replay audit requires. Readers return the top-level object and check its schema version:
the artifact's own major version (``byteor._schemas.SCHEMA_VERSIONS``) or an older one is accepted, a
newer major is rejected with :class:`~byteor.ArtifactError` naming the file, the field and both
versions. Artifacts written by producers that carry no version field (the v1 field lists
have none for ``spec_validation.json``, ``runtime.json`` and ``environment.json``) read as version 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ._errors import ArtifactError
from ._fileio import read_regular_file, write_bytes_atomic
from ._fileio import write_bytes_exclusive as _write_exclusive
from ._schemas import SCHEMA_VERSIONS

__all__ = [
    "check_version",
    "dumps_artifact",
    "read_json_object",
    "require",
    "write_bytes_atomic",
    "write_bytes_exclusive",
    "write_json",
]

#: Largest JSON artifact a reader accepts (bundles copy journals as files, never as JSON).
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


def dumps_artifact(obj: Mapping[str, Any]) -> bytes:
    """Stable JSON text: two-space indent, insertion order kept, UTF-8, one trailing newline."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_bytes_exclusive(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Create ``path`` with ``O_EXCL | O_NOFOLLOW`` (private mode) and write ``data``; an existing file
    or symlink is an ArtifactError."""
    p = os.fspath(path)
    try:
        _write_exclusive(p, data, mode=mode)
    except FileExistsError:
        raise ArtifactError(f"{p}: already exists; artifacts are never overwritten") from None
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot create: {exc.strerror}") from None


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any], *, exclusive: bool = False) -> None:
    """Write one JSON artifact, atomically or (``exclusive=True``) with ``O_EXCL``."""
    data = dumps_artifact(obj)
    if exclusive:
        write_bytes_exclusive(path, data)
    else:
        write_bytes_atomic(path, data)


def read_json_object(path: str | os.PathLike[str], *, artifact: str) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object; every failure names the file."""
    p = os.fspath(path)
    try:
        raw = read_regular_file(p, MAX_ARTIFACT_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: {artifact} artifact does not exist") from None
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot read {artifact} artifact: {exc.strerror}") from None
    if len(raw) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{p}: {artifact} artifact is larger than {MAX_ARTIFACT_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{p}: {artifact} artifact is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{p}: {artifact} artifact is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{p}: {artifact} artifact must be a JSON object, found {type(obj).__name__}")
    return obj


def check_version(
    obj: Mapping[str, Any], *, artifact: str, field: str, path: str, required: bool = False
) -> int:
    """The artifact's schema version; a newer major than this build's is an ArtifactError.

    A missing field reads as version 1 unless ``required``. Versions are integers (the major);
    a string ``"1.2"`` is accepted by its major part.
    """
    supported = SCHEMA_VERSIONS[artifact]
    if field not in obj:
        if required:
            raise ArtifactError(f"{path}: {artifact} artifact has no `{field}` version field")
        return 1
    raw = obj[field]
    major: int | None = None
    if isinstance(raw, bool):
        major = None
    elif isinstance(raw, int):
        major = raw
    elif isinstance(raw, str) and raw.split(".", 1)[0].isdigit():
        major = int(raw.split(".", 1)[0])
    if major is None or major < 1:
        raise ArtifactError(f"{path}: `{field}` must be a positive integer version, found {raw!r}")
    if major > supported:
        raise ArtifactError(
            f"{path}: {artifact} version {major} is newer than this byteor supports ({supported}); "
            f"upgrade byteor to read it"
        )
    return major


_TYPES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    list: "a list",
    dict: "an object",
}


def require(
    obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], *, path: str, nullable: bool = False
) -> Any:
    """``obj[key]`` checked against ``typ``; a missing or mistyped field names the file and field."""
    if key not in obj:
        raise ArtifactError(f"{path}: missing field `{key}`")
    value = obj[key]
    if value is None and nullable:
        return None
    types = typ if isinstance(typ, tuple) else (typ,)
    ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
    if not ok:
        want = " or ".join(_TYPES.get(t, t.__name__) for t in types)
        if nullable:
            want += " or null"
        raise ArtifactError(f"{path}: field `{key}` must be {want}, found {type(value).__name__}")
    return value
