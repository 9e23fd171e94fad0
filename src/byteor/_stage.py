"""The stage contract: what a stage is, how it is called, and what every executor guarantees.

A stage key (``add_u8``, ``http_post:https://...``, ``dataguard:pii``, ``py:mod:fn``) is resolved
**once at startup** into a :class:`ResolvedStage`; the executor then calls it per message through
one helper, :class:`StageCall`, and never looks anything up again.

The form of a stage is chosen at resolve time from the function itself:

=========  =====================================  ============================================
form       signature                              per message
=========  =====================================  ============================================
map        ``f(msg)``                              ``msg`` is ``bytes``; the return value is the
                                                   new message (``bytes``, ``bytearray`` or a
                                                   contiguous ``memoryview``, at most
                                                   ``slot_bytes``), or ``None`` to drop it
filter     ``f(msg)`` declared read-only           ``None`` drops the message, anything else
                                                   keeps it unchanged
inplace    ``f(slot, length)``                     ``slot`` is a writable ``memoryview`` of the
                                                   whole slot, the message is ``slot[:length]``;
                                                   return the new length (``0..len(slot)``) or
                                                   :data:`DROP`
readonly   ``f(slot, length)`` declared read-only  ``slot`` is a read-only view; return
                                                   ``length`` (keep) or :data:`DROP`
=========  =====================================  ============================================

A function is declared read-only with ``f.byteor_modifies = False`` (or ``@byteor.stage(readonly=True)``);
side-effect stages (``http_post``, ``exec``) are always read-only. A function that fits no form (three
positional parameters, ``*args`` only, a signature that cannot be inspected without an explicit
``byteor_form``) is refused at startup. Views handed to a stage belong to the executor: they must not
be kept past the call (the slot is reused for a later message, and the ring may be unmapped).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ._errors import ByteorError, PipelineFailed, StageContractError

__all__ = [
    "APPROVAL_COVERS",
    "APPROVAL_EXPIRES_AT",
    "APPROVAL_ID",
    "DROP",
    "FILTER",
    "FORMS",
    "INPLACE",
    "MAP",
    "READONLY",
    "ResolvedStage",
    "StageCall",
    "StageContext",
    "StageContractError",
    "StageFn",
    "describe_failure",
    "py_key",
    "stage",
    "stage_failure",
    "stage_form",
]

#: Returned by an in-place or read-only stage function to drop the message.
DROP = -1

MAP = "map"
FILTER = "filter"
INPLACE = "inplace"
READONLY = "readonly"
FORMS = (MAP, FILTER, INPLACE, READONLY)
#: The forms that write the message (through a scratch copy, so a crash never leaves half a change).
WRITING_FORMS = frozenset({MAP, INPLACE})

StageFn = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])


@overload
def stage(fn: F, /) -> F: ...
@overload
def stage(*, form: str | None = None, readonly: bool = False) -> Callable[[F], F]: ...
def stage(fn: Any = None, /, *, form: str | None = None, readonly: bool = False) -> Any:
    """Mark a function's stage form explicitly (``@stage``, ``@stage(readonly=True)``,
    ``@stage(form="inplace")``). Only needed for read-only stages and for callables whose signature
    cannot be inspected; a plain ``def f(msg)`` or ``def f(slot, length)`` needs nothing."""
    if form is not None and form not in (MAP, INPLACE):
        raise ValueError(f"form must be {MAP!r} or {INPLACE!r} (read-only is readonly=True), got {form!r}")

    def mark(f: F) -> F:
        if form is not None:
            f.byteor_form = form  # type: ignore[attr-defined]
        if readonly:
            f.byteor_modifies = False  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def _arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` needs; None when it takes any number (``*args``)."""
    sig = inspect.signature(fn)
    required = 0
    optional = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                required += 1
            else:
                optional += 1
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise StageContractError(f"has a required keyword-only parameter {p.name!r}; "
                                     "a stage function takes (msg) or (slot, length)")
    return required if required else optional


def stage_form(fn: Callable[..., Any], *, readonly: bool | None = None) -> str:
    """The form of ``fn`` (see the module docstring). ``readonly`` overrides the function's own
    ``byteor_modifies`` marker (side-effect families pass True). Raises :class:`StageContractError`
    saying why when the function fits no form."""
    if not callable(fn):
        raise StageContractError(f"{type(fn).__name__} object is not callable")
    ro = (getattr(fn, "byteor_modifies", True) is False) if readonly is None else readonly
    explicit = getattr(fn, "byteor_form", None)
    if explicit is not None:
        if explicit not in (MAP, INPLACE):
            raise StageContractError(f"byteor_form={explicit!r} is not 'map' or 'inplace'")
        two = explicit == INPLACE
    else:
        try:
            n = _arity(fn)
        except (TypeError, ValueError):
            raise StageContractError("has a signature that cannot be inspected; mark it with "
                                     "@byteor.stage(form='map') or form='inplace'") from None
        if n is None:
            raise StageContractError("takes *args; a stage function takes (msg) or (slot, length)")
        if n not in (1, 2):
            raise StageContractError(f"takes {n} positional argument{'s' if n != 1 else ''}; a stage "
                                     "function is f(msg) (map) or f(slot, length) (in place)")
        two = n == 2
    if two:
        return READONLY if ro else INPLACE
    return FILTER if ro else MAP


def py_key(fn: Callable[..., Any]) -> str:
    """The ``py:<module>:<function>`` stage key of a module-level function (what a spec records).

    Raises :class:`StageContractError` for a lambda, a nested function or a method: stage processes
    import the function by name, so it must be reachable as ``module.function``."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "." in qualname or "<" in qualname:
        raise StageContractError(f"{qualname or fn!r} is not a module-level function; stage processes "
                                 "import stages by name (py:<module>:<function>)")
    return f"py:{module}:{qualname}"

#: ``StageContext.extra`` keys set by the policy gate when decisions rely on a verified approval:
#: its ``expires_at`` (RFC 3339), its id, and the stage keys allowed only because of it (one per
#: line). Plain strings, so they reach stage processes with the rest of ``extra``.
APPROVAL_EXPIRES_AT = "approval_expires_at"
APPROVAL_ID = "approval_id"
APPROVAL_COVERS = "approval_covers"


@dataclass(frozen=True)
class StageContext:
    """What a resolver may need at startup. Built once by the run session from its options.

    ``decisions`` maps a stage key to its policy decision (``Allow``, ``DryRunOnly``, ...), computed
    by the policy gate before anything runs; action resolvers honour it. ``recorder`` receives one
    dict per suppressed (dry-run) or performed side effect when set (replay audits, --dry-run
    reports). ``extra`` carries family-specific settings (DataGuard registry root, ...) and, when an
    approval allowed some stages, when it expires (:data:`APPROVAL_EXPIRES_AT`): an action stage
    stops performing its side effect at that moment and dead-letters each message instead.
    """

    posture: str = "dev"
    dry_run: bool = False
    spec_hash: str = ""
    spec_dir: str = "."
    decisions: dict[str, str] = field(default_factory=dict)
    recorder: Callable[[dict[str, Any]], None] | None = None
    dead_letter_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedStage:
    """A stage ready to run: its function, its form and what the executor must know about it.

    ``form`` defaults from ``modifies`` (in place when it modifies, read-only otherwise), which is
    how families written against the two-argument contract keep working; given explicitly it
    decides ``modifies``. ``builtin`` is set for the kernels the native core runs without Python:
    ``("identity", 0)`` / ``("add_u8", delta)``; their ``fn`` is the reference implementation.
    """

    key: str
    fn: StageFn
    modifies: bool = True
    side_effect: bool = False
    family: str | None = None
    target: str | None = None
    close: Callable[[], None] | None = None
    builtin: tuple[str, int] | None = None
    form: str | None = None

    def __post_init__(self) -> None:
        form = self.form
        if form is None:
            form = INPLACE if self.modifies else READONLY
        elif form not in FORMS:
            raise ValueError(f"stage {self.key!r}: unknown form {form!r} (one of {', '.join(FORMS)})")
        if self.side_effect and form in WRITING_FORMS:
            raise ValueError(f"stage {self.key!r}: a side-effect stage must be read-only, not {form}")
        object.__setattr__(self, "form", form)
        object.__setattr__(self, "modifies", form in WRITING_FORMS)


def _bad_length(what: Any, slot_bytes: int) -> StageContractError:
    return StageContractError(f"returned {what!r}; expected a length in 0..{slot_bytes} or DROP")


class StageCall:
    """The one way every executor calls a stage: ``n = call(view, length)``.

    ``view`` is a ``memoryview`` of the whole slot holding the message in ``[:length]``; it must be
    writable when :attr:`writes` (map and in-place forms: the executor hands a scratch copy, so a
    failure leaves the slot untouched) and should be read-only otherwise. The result is the new
    length, or :data:`DROP`. A broken contract raises :class:`StageContractError`; the function's own
    exceptions propagate unchanged (executors name the stage and message with
    :func:`describe_failure`).
    """

    __slots__ = ("call", "form", "slot_bytes", "stage", "writes")

    def __init__(self, stage: ResolvedStage, slot_bytes: int) -> None:
        self.stage = stage
        self.form = stage.form
        self.slot_bytes = slot_bytes
        self.writes = stage.form in WRITING_FORMS
        self.call: Callable[[memoryview, int], int] = {
            MAP: self._map, FILTER: self._filter, INPLACE: self._inplace, READONLY: self._readonly,
        }[str(stage.form)]

    def _map(self, view: memoryview, length: int) -> int:
        out = self.stage.fn(view[:length].tobytes())
        if out is None:
            return DROP
        if isinstance(out, bytes | bytearray):
            n = len(out)
        elif isinstance(out, memoryview):
            if not out.c_contiguous:
                raise StageContractError("returned a non-contiguous memoryview")
            n = out.nbytes
            out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
        else:
            raise StageContractError(f"returned {type(out).__name__}; a map stage returns bytes, "
                                     "bytearray, memoryview or None")
        if n > self.slot_bytes:
            raise StageContractError(f"returned {n} bytes, more than slot_bytes={self.slot_bytes}")
        view[:n] = out
        return n

    def _filter(self, view: memoryview, length: int) -> int:
        return DROP if self.stage.fn(view[:length].tobytes()) is None else length

    def _inplace(self, view: memoryview, length: int) -> int:
        n = self.stage.fn(view, length)
        if type(n) is not int or not (0 <= n <= self.slot_bytes or n == DROP):
            raise _bad_length(n, self.slot_bytes)
        return n

    def _readonly(self, view: memoryview, length: int) -> int:
        n = self.stage.fn(view, length)
        if type(n) is not int or (n not in (length, DROP)):
            raise StageContractError(f"returned {n!r}; a read-only stage returns its length ({length}) "
                                     "or DROP")
        return n


def stage_failure(name: str, message_index: int | None, exc: BaseException) -> BaseException:
    """What an executor raises when a stage call raised ``exc``: the stage's own
    :class:`~byteor.ByteorError` (an action that finally failed) unchanged, anything else (a bug in
    the function, a broken contract) as :class:`~byteor.PipelineFailed` naming stage and message."""
    if isinstance(exc, ByteorError) and not isinstance(exc, StageContractError):
        return exc
    return PipelineFailed(describe_failure(name, message_index, exc))


def describe_failure(name: str, message_index: int | None, exc: BaseException) -> str:
    """One line naming the stage, the message and the problem (never a traceback)."""
    where = f" on message {message_index}" if message_index is not None else ""
    if isinstance(exc, ByteorError):
        return f"{name} failed{where}: {exc}"
    return f"{name} failed{where}: {type(exc).__name__}: {exc}"
