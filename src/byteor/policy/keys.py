"""Trusted signing-key sets: load (three JSON shapes), refresh from the control plane, cache.

A key is ``{"kid": str, "alg": "ed25519", "public_key": base64url-nopad of the 32 raw bytes}``.
A key-set file holds a JSON list of keys, ``{"keys": [...]}``, or the cache envelope
``{"source": "refreshed"|"cached", "last_refresh_at": RFC3339|null, "keys": [...]}``. Several keys
may be active at once (rotation): a credential verifies when the key its ``kid`` names verifies it.

Refresh (design A4): when ``BYTEOR_API_BASE_URL``, ``BYTEOR_AGENT_ID`` and ``BYTEOR_AGENT_API_KEY``
are all set, :func:`load_runtime_keys` first fetches ``GET {base}/v1/agents/{agent_id}/signing-keys``
with ``Authorization: Bearer {key}`` and writes the cache ``signing_keys.json`` next to the spec
(``source="refreshed"``). If the control plane cannot be reached or answers badly, the local file is
used and the fallback is logged (never the API key).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._errors import UsageError
from .._fileio import read_regular_file, write_text_atomic
from .._formats import b64url_decode, b64url_encode, format_rfc3339, parse_rfc3339, utc_now

__all__ = [
    "KEY_CACHE_FILE",
    "REFRESH_ENV",
    "KeySet",
    "RefreshConfig",
    "TrustedKey",
    "fetch_keys",
    "load_key_set",
    "load_runtime_keys",
    "parse_key_set",
    "write_key_cache",
]

log = logging.getLogger("byteor.policy")

#: The key cache / key set looked up next to the spec.
KEY_CACHE_FILE = "signing_keys.json"
REFRESH_ENV = ("BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY")
REFRESH_TIMEOUT_S = 5.0
MAX_KEY_SET_BYTES = 1024 * 1024
_SOURCES = ("refreshed", "cached")


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    public_key: Ed25519PublicKey
    raw: bytes

    def to_json(self) -> dict[str, str]:
        return {"kid": self.kid, "alg": "ed25519", "public_key": b64url_encode(self.raw)}

    @classmethod
    def from_raw(cls, kid: str, raw: bytes) -> TrustedKey:
        return cls(kid, Ed25519PublicKey.from_public_bytes(raw), raw)


@dataclass(frozen=True)
class KeySet:
    """Trusted keys by kid, and where they came from (``origin`` is a path or the control plane)."""

    keys: Mapping[str, TrustedKey]
    source: str  # "file", "refreshed" or "cached"
    origin: str
    last_refresh_at: str | None = None

    def get(self, kid: str) -> TrustedKey | None:
        return self.keys.get(kid)

    def to_json(self) -> list[dict[str, str]]:
        return [k.to_json() for k in self.keys.values()]


def parse_key_set(obj: Any, *, origin: str) -> KeySet:
    """Build a :class:`KeySet` from decoded JSON; :class:`UsageError` naming ``origin`` and the field."""
    source = "file"
    last: str | None = None
    if isinstance(obj, dict):
        unknown = set(obj) - {"keys", "source", "last_refresh_at"}
        if unknown:
            raise UsageError(f"{origin}: unknown key-set field {sorted(unknown)[0]!r}")
        if "source" in obj:
            if obj["source"] not in _SOURCES:
                raise UsageError(f"{origin}: `source` must be refreshed or cached, got {obj['source']!r}")
            source = "cached"  # whatever it said when written, reading it back is reading the cache
            last = obj.get("last_refresh_at")
            if last is not None:
                if not isinstance(last, str):
                    raise UsageError(f"{origin}: `last_refresh_at` must be an RFC 3339 string or null")
                try:
                    parse_rfc3339(last)
                except ValueError:
                    raise UsageError(f"{origin}: `last_refresh_at` is not RFC 3339: {last!r}") from None
        if "keys" not in obj:
            raise UsageError(f"{origin}: key set object has no `keys` list")
        items = obj["keys"]
    else:
        items = obj
    if not isinstance(items, list):
        raise UsageError(f"{origin}: a key set is a JSON list of keys or {{\"keys\": [...]}}")
    keys: dict[str, TrustedKey] = {}
    for i, item in enumerate(items):
        where = f"{origin}: keys[{i}]"
        if not isinstance(item, dict):
            raise UsageError(f"{where} is not an object")
        kid, alg, pub = item.get("kid"), item.get("alg"), item.get("public_key")
        if not isinstance(kid, str) or not kid:
            raise UsageError(f"{where}.kid must be a non-empty string")
        if alg != "ed25519":
            raise UsageError(f"{where}.alg must be \"ed25519\", got {alg!r}")
        if not isinstance(pub, str):
            raise UsageError(f"{where}.public_key must be a base64url string")
        try:
            raw = b64url_decode(pub)
        except ValueError:
            raise UsageError(f"{where}.public_key is not base64url without padding") from None
        if len(raw) != 32:
            raise UsageError(f"{where}.public_key must decode to 32 bytes, got {len(raw)}")
        if kid in keys and keys[kid].raw != raw:
            raise UsageError(f"{where}.kid {kid!r} appears twice with different keys")
        keys[kid] = TrustedKey.from_raw(kid, raw)
    return KeySet(keys, source, origin, last)


def load_key_set(path: str) -> KeySet:
    """Read a key-set file (any of the three shapes). Missing or malformed: :class:`UsageError`."""
    try:
        data = read_regular_file(path, MAX_KEY_SET_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{path}: key set file does not exist") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read key set: {exc.strerror}") from None
    if len(data) > MAX_KEY_SET_BYTES:
        raise UsageError(f"{path}: key set is larger than {MAX_KEY_SET_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: key set is not valid JSON ({exc})") from None
    return parse_key_set(obj, origin=path)


@dataclass(frozen=True)
class RefreshConfig:
    """The control-plane bootstrap. ``api_key`` is a secret: never logged, never in errors or repr."""

    base_url: str
    agent_id: str
    api_key: str

    def __repr__(self) -> str:
        return f"RefreshConfig(base_url={self.base_url!r}, agent_id={self.agent_id!r}, api_key=<redacted>)"

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/agents/{self.agent_id}/signing-keys"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RefreshConfig | None:
        """The bootstrap when all three variables are set and non-empty, else ``None``."""
        env = os.environ if env is None else env
        values = [env.get(name, "") for name in REFRESH_ENV]
        if not all(values):
            return None
        return cls(*values)


def fetch_keys(config: RefreshConfig, *, timeout: float = REFRESH_TIMEOUT_S) -> KeySet:
    """GET the signing keys from the control plane.

    Raises ``RuntimeError`` (transport error, non-200, bad JSON, empty set) with a message that names
    the URL but never contains the API key.
    """
    headers = {"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"}
    body = bytearray()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client, \
                client.stream("GET", config.url, headers=headers) as resp:
            status = resp.status_code
            if status == 200:
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_KEY_SET_BYTES:
                        raise RuntimeError(f"response from {config.url} is over {MAX_KEY_SET_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{type(exc).__name__} from {config.url}") from None
    if status != 200:
        raise RuntimeError(f"HTTP {status} from {config.url}")
    try:
        obj = json.loads(bytes(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RuntimeError(f"response from {config.url} is not JSON") from None
    try:
        parsed = parse_key_set(obj, origin=config.url)
    except UsageError as exc:
        raise RuntimeError(str(exc)) from None
    if not parsed.keys:
        raise RuntimeError(f"{config.url} returned no keys")
    now = format_rfc3339(utc_now())
    return KeySet(parsed.keys, "refreshed", config.url, now)


def write_key_cache(path: str, keys: KeySet) -> None:
    """Write the cache envelope atomically (temp file + rename) with ``source="refreshed"``."""
    doc = {"source": "refreshed", "last_refresh_at": keys.last_refresh_at, "keys": keys.to_json()}
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def load_runtime_keys(spec_dir: str, key_set: str | None,
                      refresh: RefreshConfig | None = None) -> KeySet | None:
    """The keys to verify with at startup.

    With a refresh bootstrap (argument, else the environment), the control plane is asked first;
    on success the cache next to the spec is rewritten and the fresh keys are used. Otherwise (or
    on failure, which is logged as a warning) the explicit ``key_set`` file is read, else
    ``signing_keys.json`` next to the spec. Returns ``None`` when there is no key source at all.
    """
    refresh = refresh if refresh is not None else RefreshConfig.from_env()
    cache_path = os.path.join(spec_dir, KEY_CACHE_FILE)
    local = key_set if key_set else cache_path
    if refresh is not None:
        try:
            fresh = fetch_keys(refresh)
        except RuntimeError as exc:
            have = os.path.exists(local)
            log.warning("signing-key refresh failed (%s); using the cached key set %s", exc,
                        local if have else "(none found)")
        else:
            try:
                write_key_cache(cache_path, fresh)
            except OSError as exc:
                log.warning("signing keys refreshed but the cache %s could not be written: %s",
                            cache_path, exc.strerror)
            log.info("signing keys refreshed from %s (%d keys)", refresh.url, len(fresh.keys))
            return fresh
    if key_set:
        return load_key_set(key_set)
    if os.path.exists(cache_path):
        return load_key_set(cache_path)
    return None
