"""The one exception root of byteor.

Every error byteor raises on purpose is a :class:`ByteorError`. The branches say who is at fault,
and each class carries the command-line exit code an operator sees (docs/operators.md)::

    ByteorError                       exit_code
    ├── SpecError (ValueError)            3   the spec is wrong; the message ends with its locator
    │   ├── SpecDecodeError               3   the KV text cannot be decoded (line, key)
    │   └── SpecValidationError           3   decoded, but breaks validate_v1 (all issues at once)
    ├── UsageError (ValueError)           2   bad command line or input value, missing file
    ├── UnsupportedSpecError              3   valid, but this executor cannot run the shape
    ├── StageContractError (TypeError)    3   a stage function fits no form, or broke its form's contract
    ├── PolicyRefused                     4   refused by policy, allowlist or approval
    │   └── ApprovalError                 4   the approval credential failed verification
    ├── ArtifactError (ValueError)        1   an artifact cannot be read or has a newer major version
    ├── ShmError                          1   a shared-memory file cannot be created or attached
    ├── UnsafePathError                   1   a path byteor would write is not private to this user
    ├── DataGuardError (ValueError)       1   a USM1 envelope, codec, registry or rule problem
    ├── AdapterError                      1   a transport failed (vendor errors are mapped here)
    └── PipelineFailed                    1   a running pipeline stopped (stage or side effect failed)
        └── ActionFailed                  1   a side effect finally failed after its retries

Messages never contain secrets: credentials, keys and tokens are named, never echoed.
"""

from __future__ import annotations

__all__ = [
    "ActionFailed",
    "AdapterError",
    "ApprovalError",
    "ArtifactError",
    "ByteorError",
    "DataGuardError",
    "PipelineFailed",
    "PolicyRefused",
    "ShmError",
    "SpecDecodeError",
    "SpecError",
    "SpecIssue",
    "SpecValidationError",
    "StageContractError",
    "UnsafePathError",
    "UnsupportedSpecError",
    "UsageError",
]

from dataclasses import dataclass


class ByteorError(Exception):
    """Root of every error byteor raises on purpose."""

    exit_code: int = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: the key it concerns, a message and, when known, the 1-based line."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message} at `{self.key}`" if self.key else f"{where}{self.message}"


class SpecError(ByteorError, ValueError):
    """The spec is wrong. ``issues`` lists every problem found, each with its key."""

    exit_code = 3

    def __init__(self, issues: list[SpecIssue] | SpecIssue | str, *, path: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [SpecIssue("", issues)]
        elif isinstance(issues, SpecIssue):
            issues = [issues]
        self.issues: list[SpecIssue] = list(issues)
        self.path = path
        super().__init__("; ".join(str(i) for i in self.issues))

    def lines(self) -> list[str]:
        """One readable line per problem, prefixed with the file when known."""
        prefix = f"{self.path}: " if self.path else ""
        return [f"{prefix}{issue}" for issue in self.issues]

    def with_path(self, path: str) -> SpecError:
        self.path = path
        return self


class SpecDecodeError(SpecError):
    """The KV text cannot be decoded: duplicate, unknown or inapplicable key, gap, bad value."""


class SpecValidationError(SpecError):
    """The spec decoded but breaks one or more validate_v1 rules; every broken rule is listed."""


class UnsupportedSpecError(ByteorError):
    """A valid spec whose shape this executor does not support; never run best-effort."""

    exit_code = 3


class StageContractError(ByteorError, TypeError):
    """A stage function fits no form (wrong arity, no inspectable signature), or one of its calls
    broke its form's contract (a bad return value). At startup it is reported as an invalid spec
    naming the stage key; during a run the stage and the message are named."""

    exit_code = 3


class UsageError(ByteorError, ValueError):
    """Bad command line, bad input value, or a file that does not exist."""

    exit_code = 2


class PolicyRefused(ByteorError):
    """A side effect (or a run containing one) was refused by policy, an allowlist or an approval."""

    exit_code = 4


class ApprovalError(PolicyRefused):
    """The approval credential failed verification. ``check`` names the first failed check."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"approval {check} check failed: {message}")


class ArtifactError(ByteorError, ValueError):
    """An artifact cannot be read: missing field, wrong type, or a newer major version."""


class ShmError(ByteorError):
    """A shared-memory ring or lane file cannot be created or attached (foreign, truncated, mismatched)."""


class UnsafePathError(ByteorError):
    """A directory or file byteor would create or use belongs to someone else, is writable by others,
    or is a link; byteor refuses it rather than write where another user could redirect the write."""


class DataGuardError(ByteorError, ValueError):
    """A DataGuard problem: malformed envelope, codec error, registry or rule error."""


class AdapterError(ByteorError):
    """A transport adapter failed; the vendor exception is chained as ``__cause__``."""


class PipelineFailed(ByteorError):
    """A running pipeline stopped because a stage or participant failed."""


class ActionFailed(PipelineFailed):
    """A side effect (http_post, exec) finally failed after its retries."""
