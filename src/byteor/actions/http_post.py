"""``http_post:<url>``: POST the message bytes to a URL, with an idempotency key and retries.

Everything is parsed once when the stage resolves: the URL (http or https, a host, no userinfo, no
dot segments or encoded separators; ``{env:NAME}`` placeholders in its path or query replaced from
the environment), the allowlist (``BYTEOR_HTTP_POST_ALLOWLIST``), the timeout
(``BYTEOR_HTTP_POST_TIMEOUT``, seconds, default 10) and the retry shape. Per message the stage only
hashes the bytes for ``Idempotency-Key: sha256:<hex>`` and posts them on one pooled keep-alive
``httpx.Client``.

The URL and the allowlist are parsed and matched by :mod:`byteor.policy.admission`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping

import httpx

from .._errors import ActionFailed, UsageError
from ..policy.admission import (
    HTTP_POST_ALLOWLIST_ENV,
    HTTP_POST_PREFIX,
    TargetUrl,
    allowlist_from_env,
    parse_target_url,
    url_admitted,
)
from .retry import RetryConfig, env_number

__all__ = [
    "ALLOWLIST_ENV",
    "DEFAULT_TIMEOUT_S",
    "PREFIX",
    "TIMEOUT_ENV",
    "HttpPostAction",
    "TargetUrl",
    "allowlist_from_env",
    "idempotency_key",
    "parse_target_url",
    "url_admitted",
]

PREFIX = HTTP_POST_PREFIX
ALLOWLIST_ENV = HTTP_POST_ALLOWLIST_ENV
TIMEOUT_ENV = "BYTEOR_HTTP_POST_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
#: Response bodies are read (and discarded) up to this many bytes.
MAX_RESPONSE_BYTES = 64 * 1024


def idempotency_key(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class HttpPostAction:
    """One resolved ``http_post`` target with its pooled client. Thread-safe; call :meth:`close`."""

    family = "http_post"

    def __init__(self, key: str, target: TargetUrl, *, timeout: float, retry: RetryConfig) -> None:
        self.key = key
        self.target = target
        self.retry = retry
        self.timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # a redirect could leave the allowlisted origin
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            headers={"Content-Type": "application/octet-stream", "User-Agent": "byteor-actions"},
        )
        self._url = target.url

    @classmethod
    def from_key(cls, key: str, env: Mapping[str, str] | None = None) -> HttpPostAction:
        env = os.environ if env is None else env
        target = parse_target_url(key[len(PREFIX):], env=env)
        timeout = env_number(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        if timeout <= 0:
            raise UsageError(f"{TIMEOUT_ENV} must be > 0")
        return cls(key, target, timeout=timeout, retry=RetryConfig.from_env(env))

    def perform(self, data: bytes, ikey: str | None = None) -> None:
        """POST ``data`` until it is accepted (2xx). Retries transport errors, 429 and 5xx with
        exponential backoff; anything else, or running out of retries, raises :class:`ActionFailed`."""
        headers = {"Idempotency-Key": ikey or idempotency_key(data)}
        attempt = 0
        while True:
            try:
                status = self._post_once(data, headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__} posting to {self.target.display}"
                retryable = True
            else:
                if 200 <= status < 300:
                    return
                problem = f"HTTP {status} from {self.target.display}"
                retryable = _retryable_status(status)
            if not retryable or attempt >= self.retry.max_retries:
                tries = attempt + 1
                raise ActionFailed(f"{problem} (after {tries} attempt{'s' if tries > 1 else ''})")
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def _post_once(self, data: bytes, headers: dict[str, str]) -> int:
        # The response body is drained (so the connection can be reused) up to a bound; a target
        # that answers with more is not read further and its connection is dropped instead.
        with self._client.stream("POST", self._url, content=data, headers=headers) as resp:
            seen = 0
            for chunk in resp.iter_raw():
                seen += len(chunk)
                if seen > MAX_RESPONSE_BYTES:
                    break
            return resp.status_code

    def close(self) -> None:
        self._client.close()
