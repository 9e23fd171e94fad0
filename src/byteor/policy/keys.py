"""Trusted signing-key sets: load (three JSON shapes), refresh from the control plane, cache.

A key is ``{"kid": str, "alg": "ed25519", "public_key": base64url-nopad of the 32 raw bytes}``.
A key-set file holds a JSON list of keys, ``{"keys": [...]}``, or the cache envelope
``{"source": "refreshed"|"cached", "last_refresh_at": RFC3339|null, "keys": [...]}``. Several keys
may be active at once (rotation): a credential verifies when the key its ``kid`` names verifies it.

Refresh (docs/policy.md): when ``BYTEOR_API_BASE_URL``, ``BYTEOR_AGENT_ID`` and ``BYTEOR_AGENT_API_KEY``
are all set, :func:`load_runtime_keys` first fetches ``GET {base}/v1/agents/{agent_id}/signing-keys``
with ``Authorization: Bearer {key}`` and writes the cache ``signing_keys.json`` next to the spec
(``source="refreshed"``). Whoever controls the network must not be able to mint approvals, so:

* the base URL must be ``https://``, verified against the system CAs (or ``BYTEOR_API_CA_FILE``);
  plain ``http://`` is accepted only to a loopback address and only with
  ``BYTEOR_API_ALLOW_INSECURE_LOOPBACK=1`` (for tests and local development);
* the answer must be signed by a root key the operator pins locally (``BYTEOR_APPROVAL_ROOT_KEYS``,
  a key-set file): ``{"keys": [...], "expires_at": RFC3339, "signature": {"kid", "alg": "ed25519",
  "value": base64url}}``, the signature over the canonical JSON of ``{"expires_at", "keys"}``
  (keys sorted, separators ``,`` ``:``, UTF-8); an expired set is refused, so a captured old set
  cannot be replayed forever;
* an explicit ``--approval-key-set`` is never overridden: refresh is not even attempted then.

If refresh is not configured safely, the control plane cannot be reached, or the answer is bad or
unsigned, the local file is used and the fallback is logged (never the API key; the base URL is
redacted).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._errors import UsageError
from .._fileio import read_regular_file, write_text_atomic
from .._formats import b64url_decode, b64url_encode, format_rfc3339, parse_rfc3339, utc_now
from .._redact import redact_url

__all__ = [
    "ALLOW_INSECURE_LOOPBACK_ENV",
    "CA_FILE_ENV",
    "KEY_CACHE_FILE",
    "REFRESH_ENV",
    "ROOT_KEYS_ENV",
    "KeySet",
    "RefreshConfig",
    "TrustedKey",
    "fetch_keys",
    "load_key_set",
    "load_runtime_keys",
    "parse_key_set",
    "refresh_refusal",
    "sign_key_set",
    "write_key_cache",
]

log = logging.getLogger("byteor.policy")

#: The key cache / key set looked up next to the spec.
KEY_CACHE_FILE = "signing_keys.json"
REFRESH_ENV = ("BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY")
#: A key-set file of root keys; a refreshed set must be signed by one of them.
ROOT_KEYS_ENV = "BYTEOR_APPROVAL_ROOT_KEYS"
#: ``1`` allows refresh over plain http to a loopback address (tests, local development).
ALLOW_INSECURE_LOOPBACK_ENV = "BYTEOR_API_ALLOW_INSECURE_LOOPBACK"
#: A PEM file of CA certificates to verify the control plane with instead of the system's.
CA_FILE_ENV = "BYTEOR_API_CA_FILE"
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
    """The control-plane bootstrap. ``api_key`` is a secret: never logged, never in errors or repr;
    the base URL is shown redacted (it may carry userinfo)."""

    base_url: str
    agent_id: str
    api_key: str

    def __repr__(self) -> str:
        return (f"RefreshConfig(base_url={redact_url(self.base_url)!r}, agent_id={self.agent_id!r}, "
                "api_key=<redacted>)")

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/agents/{self.agent_id}/signing-keys"

    @property
    def display(self) -> str:
        """The URL for logs and errors, credentials redacted."""
        return redact_url(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RefreshConfig | None:
        """The bootstrap when all three variables are set and non-empty, else ``None``."""
        env = os.environ if env is None else env
        values = [env.get(name, "") for name in REFRESH_ENV]
        if not all(values):
            return None
        return cls(*values)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refresh_refusal(config: RefreshConfig, env: Mapping[str, str] | None = None) -> str | None:
    """Why refresh must not be attempted with ``config`` (no request is sent then), or None."""
    import httpx  # here, not at import: every run imports this module, few refresh keys

    env = os.environ if env is None else env
    try:
        url = httpx.URL(config.url)
    except (httpx.InvalidURL, ValueError):
        return f"BYTEOR_API_BASE_URL {redact_url(config.base_url)!r} is not a valid URL"
    if url.userinfo:
        return "BYTEOR_API_BASE_URL must not carry credentials (the API key goes in BYTEOR_AGENT_API_KEY)"
    if url.scheme == "http":
        if not _loopback(url.host) or env.get(ALLOW_INSECURE_LOOPBACK_ENV, "") != "1":
            return (f"BYTEOR_API_BASE_URL must be https:// (plain http:// only to a loopback address with "
                    f"{ALLOW_INSECURE_LOOPBACK_ENV}=1)")
    elif url.scheme != "https":
        return "BYTEOR_API_BASE_URL must be https://"
    if not env.get(ROOT_KEYS_ENV, ""):
        return (f"no root key is pinned ({ROOT_KEYS_ENV}): a refreshed key set could not be told apart from "
                "one minted by whoever controls the network")
    return None


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_key_set(root: Ed25519PrivateKey, root_kid: str, keys: KeySet | list[dict[str, str]],
                 *, expires_at: str) -> dict[str, Any]:
    """The signed key-set document a control plane serves (module docstring): ``keys`` signed by
    ``root`` (whose public key the runtimes pin) until ``expires_at`` (RFC 3339)."""
    entries = keys.to_json() if isinstance(keys, KeySet) else list(keys)
    signature = root.sign(_canonical({"expires_at": expires_at, "keys": entries}))
    return {"keys": entries, "expires_at": expires_at,
            "signature": {"kid": root_kid, "alg": "ed25519", "value": b64url_encode(signature)}}


def _verify_signed(obj: Any, roots: KeySet, where: str) -> list[Any]:
    """The key entries of a signed key-set document, after checking its root signature and expiry."""
    if not isinstance(obj, dict) or set(obj) != {"keys", "expires_at", "signature"}:
        raise RuntimeError(f"{where}: the key set is not signed (expected keys, expires_at and signature)")
    sig, expires, entries = obj["signature"], obj["expires_at"], obj["keys"]
    if not isinstance(sig, dict) or sig.get("alg") != "ed25519" or not isinstance(sig.get("kid"), str) \
            or not isinstance(sig.get("value"), str):
        raise RuntimeError(f"{where}: `signature` must be {{kid, alg: ed25519, value}}")
    root = roots.get(sig["kid"])
    if root is None:
        raise RuntimeError(f"{where}: signed by `{sig['kid']}`, which is not a pinned root key ({roots.origin})")
    try:
        raw = b64url_decode(sig["value"])
        root.public_key.verify(raw, _canonical({"expires_at": expires, "keys": entries}))
    except (ValueError, InvalidSignature):
        raise RuntimeError(f"{where}: the root signature does not verify under `{sig['kid']}`") from None
    try:
        until = parse_rfc3339(expires)
    except (TypeError, ValueError):
        raise RuntimeError(f"{where}: `expires_at` is not an RFC 3339 timestamp") from None
    if utc_now() >= until:
        raise RuntimeError(f"{where}: the signed key set expired at {expires}")
    if not isinstance(entries, list):
        raise RuntimeError(f"{where}: `keys` must be a list")
    return entries


def _ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    ca = env.get(CA_FILE_ENV, "")
    try:
        return ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(f"{CA_FILE_ENV}={ca}: cannot load CA certificates ({exc})") from None


def fetch_keys(config: RefreshConfig, *, timeout: float = REFRESH_TIMEOUT_S,
               env: Mapping[str, str] | None = None) -> KeySet:
    """GET the signing keys from the control plane and check them against the pinned root keys.

    Raises ``RuntimeError`` (refresh refused by configuration, transport or TLS error, non-200, bad
    JSON, unsigned or badly signed set, empty set) with a message that names the redacted URL but
    never contains the API key. No request is sent when :func:`refresh_refusal` objects.
    """
    env = os.environ if env is None else env
    import httpx

    why = refresh_refusal(config, env)
    if why is not None:
        raise RuntimeError(f"refresh refused: {why}")
    try:
        roots = load_key_set(env[ROOT_KEYS_ENV])
    except UsageError as exc:
        raise RuntimeError(f"pinned root keys unusable: {exc}") from None
    shown = config.display
    headers = {"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"}
    body = bytearray()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, verify=_ssl_context(env)) as client, \
                client.stream("GET", config.url, headers=headers) as resp:
            status = resp.status_code
            if status == 200:
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_KEY_SET_BYTES:
                        raise RuntimeError(f"response from {shown} is over {MAX_KEY_SET_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{type(exc).__name__} from {shown}") from None
    if status != 200:
        raise RuntimeError(f"HTTP {status} from {shown}")
    try:
        obj = json.loads(bytes(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RuntimeError(f"response from {shown} is not JSON") from None
    entries = _verify_signed(obj, roots, shown)
    try:
        parsed = parse_key_set(entries, origin=shown)
    except UsageError as exc:
        raise RuntimeError(str(exc)) from None
    if not parsed.keys:
        raise RuntimeError(f"{shown} returned no keys")
    now = format_rfc3339(utc_now())
    return KeySet(parsed.keys, "refreshed", shown, now)


def write_key_cache(path: str, keys: KeySet) -> None:
    """Write the cache envelope atomically (temp file + rename) with ``source="refreshed"``."""
    doc = {"source": "refreshed", "last_refresh_at": keys.last_refresh_at, "keys": keys.to_json()}
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def load_runtime_keys(spec_dir: str, key_set: str | None,
                      refresh: RefreshConfig | None = None) -> KeySet | None:
    """The keys to verify with at startup.

    An explicit ``key_set`` file is used as it is: it is never overridden, and no refresh request is
    sent. Otherwise, with a refresh bootstrap (argument, else the environment), the control plane is
    asked first (module docstring); on success the cache next to the spec is rewritten and the fresh
    keys are used; on failure (logged as a warning) ``signing_keys.json`` next to the spec is read.
    Returns ``None`` when there is no key source at all.
    """
    if key_set:
        return load_key_set(key_set)
    refresh = refresh if refresh is not None else RefreshConfig.from_env()
    cache_path = os.path.join(spec_dir, KEY_CACHE_FILE)
    if refresh is not None:
        try:
            fresh = fetch_keys(refresh)
        except RuntimeError as exc:
            have = os.path.exists(cache_path)
            log.warning("signing-key refresh failed (%s); using the cached key set %s", exc,
                        cache_path if have else "(none found)")
        else:
            try:
                write_key_cache(cache_path, fresh)
            except OSError as exc:
                log.warning("signing keys refreshed but the cache %s could not be written: %s",
                            cache_path, exc.strerror)
            log.info("signing keys refreshed from %s (%d keys)", refresh.display, len(fresh.keys))
            return fresh
    if os.path.exists(cache_path):
        return load_key_set(cache_path)
    return None
