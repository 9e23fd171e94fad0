"""Approval credentials v1 (docs/policy.md): issue, decode and verify, bound to one spec hash.

Wire format::

    <base64url-nopad(payload)>.<base64url-nopad(ed25519 signature over the payload bytes)>

The payload is a JSON object, keys sorted, separators ``,`` and ``:``, UTF-8, with the fields of
:data:`PAYLOAD_FIELDS`. Verification signs nothing again: the signature is checked over the exact
payload bytes that were decoded.

:func:`verify_credential` runs the checks in the documented order and raises
:class:`~byteor.ApprovalError` for the first one that fails; ``exc.check`` is one of
:data:`CHECKS`. Messages name what failed but never echo the credential.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._errors import ApprovalError, UsageError
from .._fileio import read_regular_file
from .._formats import b64url_decode, b64url_encode, format_rfc3339, parse_rfc3339, utc_now
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1
from .decisions import DEFAULT_MAX_APPROVAL_LIFETIME
from .keys import KeySet

__all__ = [
    "APPROVAL_FILE",
    "CAPABILITIES",
    "CHECKS",
    "CLOCK_SKEW",
    "CREDENTIAL_VERSION",
    "DEFAULT_MAX_LIFETIME",
    "IDENTITY_ENV",
    "PAYLOAD_FIELDS",
    "SIDE_EFFECT_FAMILIES",
    "ApprovalPayload",
    "VerifiedApproval",
    "decode_credential",
    "encode_payload",
    "issue_credential",
    "read_credential",
    "required_capabilities",
    "run_identity",
    "side_effect_stages",
    "verify_credential",
]

CREDENTIAL_VERSION = 1
APPROVAL_FILE = "approval.cred"
SIDE_EFFECT_FAMILIES = ("http_post", "exec")
CAPABILITIES = ("http_post", "exec", "replay_execute")
#: Verification checks, in the order they run; the first failure is reported.
CHECKS = ("decode", "signature", "version", "spec_hash", "environment", "expiry", "capabilities")
POSTURES = ("dev", "staging", "prod")
PAYLOAD_FIELDS = (
    "v", "kid", "org_id", "project_id", "environment_id", "environment_posture", "spec_hash",
    "capabilities", "issued_at", "expires_at", "issued_by", "approval_id",
)
_MAX_CREDENTIAL_CHARS = 64 * 1024
#: How far in the future ``issued_at`` may lie (issuer and runtime clocks disagree a little).
CLOCK_SKEW = timedelta(minutes=5)
#: The longest lifetime (``expires_at - issued_at``) accepted unless a policy file says otherwise.
DEFAULT_MAX_LIFETIME = DEFAULT_MAX_APPROVAL_LIFETIME
#: The run's identity: when a variable is set, the credential's field must equal it.
IDENTITY_ENV = {"org_id": "BYTEOR_ORG_ID", "project_id": "BYTEOR_PROJECT_ID",
                "environment_id": "BYTEOR_ENVIRONMENT_ID"}


@dataclass(frozen=True)
class ApprovalPayload:
    """The decoded v1 payload fields."""

    v: int
    kid: str
    org_id: str
    project_id: str
    environment_id: str
    environment_posture: str
    spec_hash: str
    capabilities: tuple[str, ...]
    issued_at: str
    expires_at: str
    issued_by: str
    approval_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.v, "kid": self.kid, "org_id": self.org_id, "project_id": self.project_id,
            "environment_id": self.environment_id, "environment_posture": self.environment_posture,
            "spec_hash": self.spec_hash, "capabilities": list(self.capabilities),
            "issued_at": self.issued_at, "expires_at": self.expires_at, "issued_by": self.issued_by,
            "approval_id": self.approval_id,
        }


@dataclass(frozen=True)
class VerifiedApproval:
    """A credential that passed every check, with what it was checked against."""

    payload: ApprovalPayload
    required: tuple[str, ...]
    key_source: str

    def summary(self) -> dict[str, Any]:
        p = self.payload
        return {"approval_id": p.approval_id, "kid": p.kid, "issued_by": p.issued_by,
                "environment_posture": p.environment_posture, "environment_id": p.environment_id,
                "capabilities": list(p.capabilities), "expires_at": p.expires_at,
                "required": list(self.required), "key_source": self.key_source}


def encode_payload(fields: dict[str, Any]) -> bytes:
    """Canonical payload bytes: keys sorted, separators ``,`` ``:``, UTF-8 (no ASCII escaping)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def issue_credential(private_key: Ed25519PrivateKey, *, kid: str, spec_hash: str, posture: str,
                     capabilities: Iterable[str], ttl: timedelta, org_id: str = "local",
                     project_id: str = "local", environment_id: str | None = None,
                     issued_by: str = "operator", approval_id: str | None = None,
                     issued_at: datetime | None = None) -> str:
    """Sign a v1 credential. Raises :class:`UsageError` on a bad posture, capability or TTL."""
    if posture not in POSTURES:
        raise UsageError(f"--env must be one of {', '.join(POSTURES)}, got {posture!r}")
    caps = sorted(set(capabilities))
    for cap in caps:
        if cap not in CAPABILITIES:
            raise UsageError(f"unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}")
    if ttl.total_seconds() <= 0:
        raise UsageError("--ttl must be positive")
    if not kid:
        raise UsageError("--kid must not be empty")
    start = (issued_at or utc_now()).replace(microsecond=0)
    fields = {
        "v": CREDENTIAL_VERSION, "kid": kid, "org_id": org_id, "project_id": project_id,
        "environment_id": environment_id or posture, "environment_posture": posture,
        "spec_hash": spec_hash, "capabilities": caps, "issued_at": format_rfc3339(start),
        "expires_at": format_rfc3339(start + ttl), "issued_by": issued_by,
        "approval_id": approval_id or str(uuid.uuid4()),
    }
    payload = encode_payload(fields)
    return f"{b64url_encode(payload)}.{b64url_encode(private_key.sign(payload))}"


def read_credential(value: str | None, spec_dir: str) -> tuple[str, str] | None:
    """Find the credential: ``value`` is a path if such a file exists, else the credential itself;
    without ``value``, ``approval.cred`` next to the spec. Returns ``(credential, origin)`` or None.
    Surrounding whitespace (and the final newline) is ignored."""
    if value:
        if os.path.isfile(value):
            return _read_cred_file(value), value
        if "/" in value:  # never part of a credential (base64url has no '/'): a path that is missing
            # A credential in the standard base64 alphabet holds '/' too: such a value (long, or with
            # '+' or '=') is never echoed. A credential is hundreds of characters; a path rarely is.
            if len(value) < 200 and not any(c in value for c in "+="):
                raise UsageError(f"{value}: approval credential file does not exist")
            raise UsageError("--approval names no file (a value with '/' is taken as a path; this one is not "
                             "shown because it may be a credential)")
        return value.strip(), "--approval"
    default = os.path.join(spec_dir, APPROVAL_FILE)
    if os.path.isfile(default):
        return _read_cred_file(default), default
    return None


def _read_cred_file(path: str) -> str:
    try:
        data = read_regular_file(path, _MAX_CREDENTIAL_CHARS)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read approval credential: {exc.strerror}") from None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "\ufffd"  # undecodable: fails the decode check, without echoing anything


def _decode(credential: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """Split and decode; ApprovalError("decode") naming the part that is wrong (never the value)."""
    if len(credential) > _MAX_CREDENTIAL_CHARS:
        raise ApprovalError("decode", "credential is too long")
    parts = credential.split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ApprovalError("decode", "credential is not <payload>.<signature>")
    try:
        payload = b64url_decode(parts[0])
    except ValueError:
        raise ApprovalError("decode", "payload part is not base64url without padding") from None
    try:
        signature = b64url_decode(parts[1])
    except ValueError:
        raise ApprovalError("decode", "signature part is not base64url without padding") from None
    if len(signature) != 64:
        raise ApprovalError("decode", f"signature is {len(signature)} bytes, an Ed25519 signature is 64")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApprovalError("decode", "payload is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ApprovalError("decode", "payload is not a JSON object")
    if not isinstance(obj.get("kid"), str) or not obj["kid"]:
        raise ApprovalError("decode", "payload field `kid` is missing or not a string")
    if not isinstance(obj.get("v"), int) or isinstance(obj["v"], bool):
        raise ApprovalError("decode", "payload field `v` is missing or not an integer")
    if obj["v"] == CREDENTIAL_VERSION:
        # The field list is only known for the version we read; another version decodes far enough
        # to be signature-checked and then fails the version check, as the documented order says.
        _fields(obj)
    return payload, signature, obj


def _fields(obj: dict[str, Any]) -> ApprovalPayload:
    missing = [f for f in PAYLOAD_FIELDS if f not in obj]
    if missing:
        raise ApprovalError("decode", f"payload field `{missing[0]}` is missing")
    unknown = sorted(set(obj) - set(PAYLOAD_FIELDS))
    if unknown:
        raise ApprovalError("decode", f"payload has unknown field `{unknown[0]}`")
    if not isinstance(obj["v"], int) or isinstance(obj["v"], bool):
        raise ApprovalError("decode", "payload field `v` is not an integer")
    for name in PAYLOAD_FIELDS:
        if name in ("v", "capabilities"):
            continue
        if not isinstance(obj[name], str):
            raise ApprovalError("decode", f"payload field `{name}` is not a string")
    caps = obj["capabilities"]
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise ApprovalError("decode", "payload field `capabilities` is not a list of strings")
    for name in ("issued_at", "expires_at"):
        try:
            parse_rfc3339(obj[name])
        except ValueError:
            raise ApprovalError("decode", f"payload field `{name}` is not an RFC 3339 timestamp") from None
    return ApprovalPayload(
        v=obj["v"], kid=obj["kid"], org_id=obj["org_id"], project_id=obj["project_id"],
        environment_id=obj["environment_id"], environment_posture=obj["environment_posture"],
        spec_hash=obj["spec_hash"], capabilities=tuple(caps), issued_at=obj["issued_at"],
        expires_at=obj["expires_at"], issued_by=obj["issued_by"], approval_id=obj["approval_id"],
    )


def decode_credential(credential: str) -> ApprovalPayload:
    """Decode without verifying (for display). Raises ApprovalError("decode")."""
    _, _, obj = _decode(credential.strip())
    if obj["v"] != CREDENTIAL_VERSION:
        raise ApprovalError("version", f"credential version {obj['v']} is not supported")
    return _fields(obj)


def run_identity(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The identity fields this run is configured with (:data:`IDENTITY_ENV`, the non-empty ones)."""
    environ = os.environ if env is None else env
    return {field: environ[var] for field, var in IDENTITY_ENV.items() if environ.get(var, "")}


def verify_credential(credential: str, *, keys: KeySet | None, spec_hash: str, posture: str,
                      required: Iterable[str], now: datetime | None = None,
                      max_lifetime: timedelta | None = DEFAULT_MAX_LIFETIME,
                      identity: Mapping[str, str] | None = None) -> VerifiedApproval:
    """Run every check in :data:`CHECKS` order; raise ApprovalError for the first that fails.

    ``environment`` also compares ``identity`` (default: :func:`run_identity` of the process
    environment) with the credential's ``org_id`` / ``project_id`` / ``environment_id``; ``expiry``
    also refuses an ``issued_at`` more than :data:`CLOCK_SKEW` in the future, an ``expires_at`` not
    after ``issued_at``, and a lifetime longer than ``max_lifetime`` (None: no cap).
    """
    payload_bytes, signature, obj = _decode(credential.strip())
    kid: str = obj["kid"]
    # signature (an unknown kid fails here too: the credential cannot be tied to a trusted key)
    if keys is None:
        raise ApprovalError("signature", "no trusted signing keys (pass --approval-key-set, or put "
                                         "signing_keys.json next to the spec)")
    key = keys.get(kid)
    if key is None:
        raise ApprovalError("signature", f"signing key `{kid}` is not in the trusted key set "
                                         f"({keys.origin}, {len(keys.keys)} keys)")
    try:
        key.public_key.verify(signature, payload_bytes)
    except InvalidSignature:
        raise ApprovalError("signature", f"signature does not verify under key `{kid}`") from None
    if obj["v"] != CREDENTIAL_VERSION:
        raise ApprovalError("version", f"credential version {obj['v']} is not supported "
                                       f"(this runtime reads v{CREDENTIAL_VERSION})")
    payload = _fields(obj)
    if payload.spec_hash != spec_hash:
        raise ApprovalError("spec_hash", f"credential approves {payload.spec_hash}, this spec is {spec_hash}")
    if payload.environment_posture != posture:
        raise ApprovalError("environment", f"credential is for posture {payload.environment_posture!r}, "
                                           f"this run is {posture!r}")
    for field, want in (run_identity() if identity is None else identity).items():
        have = getattr(payload, field)
        if have != want:
            raise ApprovalError("environment", f"credential is for {field} {have!r}, this run is {want!r} "
                                               f"({IDENTITY_ENV.get(field, field)})")
    moment = now or utc_now()
    issued = parse_rfc3339(payload.issued_at)
    expires = parse_rfc3339(payload.expires_at)
    if moment >= expires:
        raise ApprovalError("expiry", f"credential expired at {payload.expires_at}")
    if expires <= issued:
        raise ApprovalError("expiry", f"credential expires ({payload.expires_at}) before it is issued "
                                      f"({payload.issued_at})")
    if issued > moment + CLOCK_SKEW:
        raise ApprovalError("expiry", f"credential is issued at {payload.issued_at}, in the future beyond the "
                                      f"allowed clock skew of {int(CLOCK_SKEW.total_seconds())} s")
    if max_lifetime is not None and expires - issued > max_lifetime:
        raise ApprovalError("expiry", f"credential lifetime {_span(expires - issued)} exceeds the policy's "
                                      f"maximum of {_span(max_lifetime)}")
    req = tuple(sorted(set(required)))
    missing = [c for c in req if c not in payload.capabilities]
    if missing:
        raise ApprovalError("capabilities", f"credential lacks required capabilities {', '.join(missing)} "
                                            f"(carries {', '.join(payload.capabilities) or 'none'})")
    return VerifiedApproval(payload, req, keys.source)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def side_effect_stages(spec: PipelineSpecV1) -> list[tuple[int, str, str, str]]:
    """``(index, name, key, family)`` of every side-effecting stage (SingleRing stages or LaneGraph
    stage roles), in spec order."""
    out: list[tuple[int, str, str, str]] = []
    if isinstance(spec, LaneGraphSpecV1):
        for i, role in enumerate(spec.roles):
            fam = role.family if role.kind == "stage" else None
            if fam in SIDE_EFFECT_FAMILIES and role.resolver_key:
                out.append((i, role.name, role.resolver_key, fam))
    else:
        for i, stage in enumerate(spec.stages):
            fam = stage.family
            if fam in SIDE_EFFECT_FAMILIES and stage.resolver_key:
                out.append((i, stage.id, stage.resolver_key, fam))
    return out


def required_capabilities(spec: PipelineSpecV1, *, replay_execute: bool = False) -> tuple[str, ...]:
    """The side-effect families present in the spec, plus ``replay_execute`` for execute replay."""
    caps = {fam for _, _, _, fam in side_effect_stages(spec)}
    if replay_execute:
        caps.add("replay_execute")
    return tuple(sorted(caps))
