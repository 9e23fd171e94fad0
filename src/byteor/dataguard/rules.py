"""Redaction rules: parsing, checking against a schema, and applying them to values.

Rule syntax (one per ``--rule=``, or one per line of a rules file)::

    FIELD:drop                 remove the field (row payloads: write the type's empty value)
    FIELD:replace_with=VALUE   the value becomes VALUE (int fields: VALUE must be an integer,
                               bool fields: true/false, bytes fields: VALUE's UTF-8 bytes)
    FIELD:hash                 "sha256:<lowercase hex>" of the UTF-8 string (or of the bytes); with a
                               key in the environment the digest is HMAC-SHA256(key, value) instead
    FIELD:mask=P:S:C           keep P leading and S trailing characters (bytes for a bytes value) and
                               replace each one between with the single character C
    FIELD:truncate=N           keep the first N characters (bytes for a bytes value)

P, S and N are decimal integers of at most :data:`MAX_RULE_NUMBER` (a larger number could never
apply to a USM1 value, which is at most 65,535 bytes); a larger one is a :class:`RuleError` (exit 2).

``FIELD`` is everything before the first ``:`` (so a field name cannot contain ``:``). Rules apply in
the order given; several rules may name one field. A rule leaves a value unchanged (a *no-op*, counted
in ``counts.redact_noop``) when mask sees at most P+S characters, truncate at most N, or replace_with
the value it would write. hash, mask and truncate apply to string and bytes fields; checked against the
run's schema at startup (:class:`RuleError`), and applied to the decimal / ``true``/``false`` text of a
value whose type the schema does not fix (mapkv redact flow).

Rules file: UTF-8 text, one rule per line, blank lines and ``#`` comments ignored; or JSON, either a
list of rule strings or ``{"rules": [...]}``. :func:`redact_json_artifact` applies a rule set to
byteor's own JSON artifacts by field name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._fileio import read_regular_file
from .codecs import Value
from .errors import RuleError

__all__ = [
    "ACTIONS",
    "DEFAULT_HASH_KEY_ENV",
    "DROPPED",
    "MAX_RULE_NUMBER",
    "Rule",
    "RuleSet",
    "apply_rule",
    "load_rules_file",
    "parse_rule",
    "parse_rules",
    "redact_json_artifact",
]

ACTIONS = ("drop", "replace_with", "hash", "mask", "truncate")
#: The environment variable whose value keys ``hash`` (HMAC-SHA256) when set and non-empty.
DEFAULT_HASH_KEY_ENV = "BYTEOR_DATAGUARD_HASH_KEY"

#: The largest P, S or N a rule accepts: far above any USM1 value (at most 65,535 bytes), and small
#: enough that no sum or product of them can overflow in the C kernel.
MAX_RULE_NUMBER = 1 << 20
#: A rules file larger than this is refused (rules are a few lines).
MAX_RULES_BYTES = 1024 * 1024

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_NUM = re.compile(r"0|[1-9][0-9]*")


class _Dropped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROPPED"


#: Returned by :func:`apply_rule` when the field is removed.
DROPPED: Any = _Dropped()


@dataclass(frozen=True)
class Rule:
    """One parsed rule; ``text`` is the rule as written (it names the rule in every error)."""

    text: str
    field: str
    action: str
    value: str = ""
    prefix: int = 0
    suffix: int = 0
    mask_char: str = "*"
    n: int = 0

    def fits_type(self, type_name: str) -> str | None:
        """Why this rule cannot apply to a field of ``type_name``, or None when it can."""
        if self.action in ("hash", "mask", "truncate") and type_name not in ("string", "bytes"):
            return f"{self.action} applies to string and bytes fields; {self.field!r} is {type_name}"
        if self.action == "mask" and type_name == "bytes" and len(self.mask_char.encode("utf-8")) != 1:
            return f"mask character {self.mask_char!r} is not one byte, but {self.field!r} is bytes"
        if self.action == "replace_with":
            if type_name == "int" and not _INT.fullmatch(self.value):
                return f"{self.field!r} is int but {self.value[:40]!r} is not an integer"
            if type_name == "int" and i64_of(self.value) is None:
                return f"{self.value[:40]} does not fit an i64"
            if type_name == "bool" and self.value not in ("true", "false"):
                return f"{self.field!r} is bool; replace_with needs true or false"
        return None


def i64_of(text: str) -> int | None:
    """``text`` as a signed 64-bit integer, or None when it is not a decimal integer in range
    (checked on the text first: thousands of digits are never converted)."""
    if not _INT.fullmatch(text) or len(text.lstrip("-")) > 19:
        return None
    n = int(text)
    return n if -(2**63) <= n < 2**63 else None


def parse_rule(text: str) -> Rule:
    """Parse one rule; :class:`RuleError` quotes the rule and says what is wrong."""
    field, sep, rest = text.partition(":")
    if not sep or not field:
        raise RuleError(f"rule {text!r}: expected FIELD:ACTION (drop, replace_with=V, hash, mask=P:S:C, "
                        "truncate=N)")
    action, eq, arg = rest.partition("=")
    if action in ("drop", "hash"):
        if eq:
            raise RuleError(f"rule {text!r}: {action} takes no argument")
        return Rule(text, field, action)
    if action == "replace_with":
        if not eq:
            raise RuleError(f"rule {text!r}: replace_with needs =VALUE")
        return Rule(text, field, action, value=arg)
    if action == "mask":
        parts = arg.split(":", 2) if eq else []
        if len(parts) != 3 or not _NUM.fullmatch(parts[0]) or not _NUM.fullmatch(parts[1]):
            raise RuleError(f"rule {text!r}: mask needs =P:S:C (P and S non-negative integers)")
        if len(parts[2]) != 1:
            raise RuleError(f"rule {text!r}: mask character C must be exactly one character")
        return Rule(text, field, action, prefix=_bounded(text, "P", parts[0]), suffix=_bounded(text, "S", parts[1]),
                    mask_char=parts[2])
    if action == "truncate":
        if not eq or not _NUM.fullmatch(arg):
            raise RuleError(f"rule {text!r}: truncate needs =N (a non-negative integer)")
        return Rule(text, field, action, n=_bounded(text, "N", arg))
    raise RuleError(f"rule {text!r}: unknown action {action!r} (drop, replace_with, hash, mask, truncate)")


def _bounded(text: str, name: str, digits: str) -> int:
    # Compared as text first: a number of thousands of digits is refused without converting it.
    if len(digits) > len(str(MAX_RULE_NUMBER)) or int(digits) > MAX_RULE_NUMBER:
        raise RuleError(f"rule {text[:80]!r}: {name} is larger than {MAX_RULE_NUMBER}")
    return int(digits)


def parse_rules(texts: Iterable[str]) -> list[Rule]:
    return [parse_rule(t) for t in texts]


def load_rules_file(path: str | os.PathLike[str]) -> list[Rule]:
    """Rules from a file: text (one rule a line, ``#`` comments) or JSON (a list or ``{"rules": [...]}``).

    A missing file or a bad rule is a :class:`RuleError` naming the file (and line).
    """
    p = os.fspath(path)
    try:
        data = read_regular_file(p, MAX_RULES_BYTES)
        if len(data) > MAX_RULES_BYTES:
            raise RuleError(f"rules file {p!r}: larger than {MAX_RULES_BYTES} bytes")
        text = data.decode("utf-8")
    except OSError as exc:
        raise RuleError(f"rules file {p!r}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise RuleError(f"rules file {p!r}: not UTF-8") from exc
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleError(f"rules file {p!r}: not valid JSON ({exc})") from exc
        items = raw.get("rules") if isinstance(raw, dict) else raw
        if not isinstance(items, list) or not all(isinstance(r, str) for r in items):
            raise RuleError(f"rules file {p!r}: expected a list of rule strings or {{\"rules\": [...]}}")
        out = []
        for i, r in enumerate(items):
            try:
                out.append(parse_rule(r))
            except RuleError as exc:
                raise RuleError(f"rules file {p!r}: rules[{i}]: {exc}") from None
        return out
    rules = []
    for lineno, line in enumerate(text.split("\n"), 1):
        body = line.rstrip("\r")
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        try:
            rules.append(parse_rule(body.strip()))
        except RuleError as exc:
            raise RuleError(f"rules file {p!r}: line {lineno}: {exc}") from None
    return rules


def _digest(data: bytes, key: bytes | None) -> str:
    if key is None:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return "sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


def _text_of(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: apply_rule status values.
ABSENT, APPLIED, NOOP = 0, 1, 2


def apply_rule(rule: Rule, value: Value, hash_key: bytes | None = None) -> tuple[Any, int]:
    """Apply ``rule`` to one present value; return ``(new_value or DROPPED, APPLIED|NOOP)``.

    Strings keep their type, bytes keep theirs; an int/bool value under hash, mask or truncate is
    first written as text (the result is a string).
    """
    action = rule.action
    if action == "drop":
        return DROPPED, APPLIED
    if action == "replace_with":
        new: Value
        if isinstance(value, bool):
            new = rule.value == "true" if rule.value in ("true", "false") else rule.value
        elif isinstance(value, int):
            as_int = i64_of(rule.value)
            new = as_int if as_int is not None else rule.value
        elif isinstance(value, bytes):
            new = rule.value.encode("utf-8")
        else:
            new = rule.value
        same = type(new) is type(value) and new == value
        return new, NOOP if same else APPLIED
    if isinstance(value, bytes):
        if action == "hash":
            return _digest(value, hash_key).encode("ascii"), APPLIED
        if action == "mask":
            if len(value) <= rule.prefix + rule.suffix:
                return value, NOOP
            c = rule.mask_char.encode("utf-8")
            middle = len(value) - rule.prefix - rule.suffix
            return value[:rule.prefix] + c * middle + value[len(value) - rule.suffix:], APPLIED
        if len(value) <= rule.n:
            return value, NOOP
        return value[:rule.n], APPLIED
    text = value if isinstance(value, str) else _text_of(value)
    if action == "hash":
        return _digest(text.encode("utf-8"), hash_key), APPLIED
    if action == "mask":
        if len(text) <= rule.prefix + rule.suffix:
            return value, NOOP
        middle = len(text) - rule.prefix - rule.suffix
        return text[:rule.prefix] + rule.mask_char * middle + text[len(text) - rule.suffix:], APPLIED
    if len(text) <= rule.n:
        return value, NOOP
    return text[:rule.n], APPLIED


class RuleSet:
    """An ordered rule list plus the hash key, grouped by field for one lookup per field.

    ``hash_key_env`` names the environment variable that keys ``hash``; when ``required`` is true
    the variable must be set (a :class:`RuleError` otherwise). The key's value never appears in a
    message, report or repr.
    """

    def __init__(self, rules: Sequence[Rule], *, hash_key_env: str = DEFAULT_HASH_KEY_ENV,
                 hash_key_required: bool = False, environ: dict[str, str] | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.hash_key_env = hash_key_env
        env = os.environ if environ is None else environ
        raw = env.get(hash_key_env, "")
        if hash_key_required and not raw:
            raise RuleError(f"hash key variable {hash_key_env} is not set (or empty)")
        self.hash_key: bytes | None = raw.encode("utf-8") if raw else None
        by_field: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules):
            by_field.setdefault(r.field, []).append(i)
        self.by_field: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in by_field.items()}

    @property
    def hash_keyed(self) -> bool:
        return self.hash_key is not None

    def __repr__(self) -> str:
        return f"RuleSet({[r.text for r in self.rules]!r}, hash_keyed={self.hash_keyed})"

    def check_schema_types(self, types: dict[str, str], where: str) -> str | None:
        """First reason a rule cannot apply to a field of this schema (``types``: name -> type)."""
        for r in self.rules:
            t = types.get(r.field)
            if t is not None:
                why = r.fits_type(t)
                if why:
                    return f"rule {r.text!r}: {why} ({where})"
        return None


def redact_json_artifact(obj: Any, rules: RuleSet | Sequence[Rule]) -> Any:
    """A redacted copy of a JSON value: every object member whose key names a rule's field is redacted.

    Applies at any depth (objects inside lists included). ``drop`` removes the member; the other rules
    act as on payload values. A number, boolean, null, list or object under hash/mask/truncate is first
    written as compact JSON text (so nothing under a named field escapes redaction), and the result is
    a string. The input is not modified.
    """
    rs = rules if isinstance(rules, RuleSet) else RuleSet(rules)
    return _redact_json(obj, rs)


def _redact_json(obj: Any, rs: RuleSet) -> Any:
    if isinstance(obj, list):
        return [_redact_json(v, rs) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[Any, Any] = {}
    for k, v in obj.items():
        idx = rs.by_field.get(k) if isinstance(k, str) else None
        if idx is None:
            out[k] = _redact_json(v, rs)
            continue
        value: Any = v if isinstance(v, str | int) and not isinstance(v, float) else None
        if value is None:
            value = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for i in idx:
            value, _ = apply_rule(rs.rules[i], value, rs.hash_key)
            if value is DROPPED:
                break
        if value is not DROPPED:
            out[k] = value
    return out
