"""The file-backed schema registry.

Layout under the registry root (docs/dataguard.md)::

    <root>/<schema_id>/<msg_type>/v<msg_version>.json

    {"codec": "mapkv" | "row",
     "fields": [{"name": "email", "type": "string" | "int" | "bytes" | "bool", "required": true}, ...],
     "description": "optional free text"}

Ids and versions are plain decimal. ``required`` defaults to true; in a row schema every field is
present on the wire whatever ``required`` says. Any other key, a duplicate field name, an unknown type or
codec is a :class:`RegistryError` naming the file.

Compatibility: a message ``(schema_id, msg_type, msg_version)`` is compatible with a run that requires
``(S, T, V)`` when ``schema_id == S``, ``msg_type == T``, ``msg_version >= V`` and the file for
``msg_version`` exists. :meth:`Registry.require` is the startup check: the tuple must have at least one
version ``>= V`` whose codec is the run's mode; else the run does not start.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from .._fileio import read_regular_file
from .codecs import TYPE_TAGS
from .envelope import CODEC_IDS
from .errors import RegistryError

__all__ = ["FieldDef", "Registry", "Schema"]

_VERSION_FILE = re.compile(r"v(0|[1-9][0-9]*)\.json")
_SCHEMA_KEYS = frozenset({"codec", "fields", "description"})
_FIELD_KEYS = frozenset({"name", "type", "required"})
#: Bound on distinct tuples remembered by the per-message lookups (never per-message file I/O beyond it).
_CACHE_LIMIT = 4096
#: A schema file larger than this is refused.
MAX_SCHEMA_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    required: bool = True

    @property
    def tag(self) -> int:
        return TYPE_TAGS[self.type]


@dataclass(frozen=True)
class Schema:
    schema_id: int
    msg_type: int
    msg_version: int
    codec: str
    fields: tuple[FieldDef, ...]
    path: str

    @property
    def codec_id(self) -> int:
        return CODEC_IDS[self.codec]

    def field(self, name: str) -> FieldDef | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def pairs(self) -> list[tuple[str, str]]:
        return [(f.name, f.type) for f in self.fields]


def _parse_schema(path: str, schema_id: int, msg_type: int, version: int) -> Schema:
    try:
        data = read_regular_file(path, MAX_SCHEMA_BYTES)
        if len(data) > MAX_SCHEMA_BYTES:
            raise RegistryError(f"{path}: schema file is larger than {MAX_SCHEMA_BYTES} bytes")
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: a schema file holds a JSON object")
    unknown = sorted(set(raw) - _SCHEMA_KEYS)
    if unknown:
        raise RegistryError(f"{path}: unknown key {unknown[0]!r} (known: codec, fields, description)")
    codec = raw.get("codec")
    if codec not in CODEC_IDS:
        raise RegistryError(f"{path}: `codec` must be \"mapkv\" or \"row\", got {codec!r}")
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, list):
        raise RegistryError(f"{path}: `fields` must be a list")
    fields: list[FieldDef] = []
    seen: set[str] = set()
    for i, f in enumerate(fields_raw):
        where = f"{path}: fields[{i}]"
        if not isinstance(f, dict):
            raise RegistryError(f"{where} must be an object")
        bad = sorted(set(f) - _FIELD_KEYS)
        if bad:
            raise RegistryError(f"{where}: unknown key {bad[0]!r} (known: name, type, required)")
        name, type_name, required = f.get("name"), f.get("type"), f.get("required", True)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{where}.name must be a non-empty string")
        if name in seen:
            raise RegistryError(f"{where}.name: duplicate field {name!r}")
        seen.add(name)
        if type_name not in TYPE_TAGS:
            raise RegistryError(f"{where}.type must be one of string, int, bytes, bool; got {type_name!r}")
        if not isinstance(required, bool):
            raise RegistryError(f"{where}.required must be true or false")
        fields.append(FieldDef(name, type_name, required))
    return Schema(schema_id, msg_type, version, codec, tuple(fields), path)


class Registry:
    """Lookups in one registry root. Parsed schema files and negative lookups are cached (bounded)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise RegistryError(f"registry root {self.root!r} is not a directory")
        self._schemas: dict[tuple[int, int, int], Schema | None] = {}
        self._tuples: dict[tuple[int, int], bool] = {}

    def tuple_dir(self, schema_id: int, msg_type: int) -> str:
        return os.path.join(self.root, str(schema_id), str(msg_type))

    def path_for(self, schema_id: int, msg_type: int, version: int) -> str:
        return os.path.join(self.tuple_dir(schema_id, msg_type), f"v{version}.json")

    def has_tuple(self, schema_id: int, msg_type: int) -> bool:
        """Whether any schema is registered for ``(schema_id, msg_type)``."""
        key = (schema_id, msg_type)
        hit = self._tuples.get(key)
        if hit is None:
            hit = bool(self.versions(schema_id, msg_type))
            if len(self._tuples) < _CACHE_LIMIT:
                self._tuples[key] = hit
        return hit

    def versions(self, schema_id: int, msg_type: int) -> list[int]:
        """Registered versions of a tuple, ascending (empty when none)."""
        try:
            names = os.listdir(self.tuple_dir(schema_id, msg_type))
        except OSError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _VERSION_FILE.fullmatch(n)))

    def get(self, schema_id: int, msg_type: int, version: int) -> Schema | None:
        """The schema for an exact version, or ``None`` when no file exists (malformed file: error)."""
        key = (schema_id, msg_type, version)
        if key in self._schemas:
            return self._schemas[key]
        path = self.path_for(schema_id, msg_type, version)
        schema = _parse_schema(path, *key) if os.path.isfile(path) else None
        if len(self._schemas) < _CACHE_LIMIT:
            self._schemas[key] = schema
        return schema

    def require(self, schema_id: int, msg_type: int, required_version: int, mode: str) -> Schema:
        """The startup check: the schema a run selects, or :class:`RegistryError` saying why not.

        Selects the lowest registered version ``>= required_version``; its codec must be ``mode``.
        """
        where = f"registry {self.root!r}: schema_id={schema_id} msg_type={msg_type}"
        versions = self.versions(schema_id, msg_type)
        if not versions:
            raise RegistryError(f"{where}: no schema registered (expected "
                                f"{self.path_for(schema_id, msg_type, required_version)})")
        usable = [v for v in versions if v >= required_version]
        if not usable:
            raise RegistryError(f"{where}: newest registered version is v{versions[-1]}, older than "
                                f"--required-version={required_version}")
        schema = self.get(schema_id, msg_type, usable[0])
        assert schema is not None
        if schema.codec != mode:
            raise RegistryError(f"{schema.path}: codec is {schema.codec!r} but the run's mode is {mode!r}")
        return schema
