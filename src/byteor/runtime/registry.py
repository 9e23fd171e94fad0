"""The stage registry: every stage of a spec is resolved ONCE, at startup, into a ResolvedStage.

Families of ``pipeline.stages.<i>.resolver_key`` (``family:argument``):

=============  ===========================================================================
``py``         ``py:package.module:function`` imports ``function`` (a :data:`StageFn`). It is
               treated as modifying the slot unless it has ``byteor_modifies = False``.
``http_post``  ``byteor.actions.resolve_action`` (policy-gated side effect; read-only)
``exec``       ``byteor.actions.resolve_action`` (policy-gated side effect; read-only)
``dataguard``  ``byteor.dataguard.stage.resolve_dataguard``
entry points   group ``byteor.stages``: the entry point named ``family`` loads a factory
               ``f(argument: str, ctx: StageContext) -> ResolvedStage``
=============  ===========================================================================

``op=identity`` and ``op=add_u8`` are builtins: they carry ``builtin=("identity", 0)`` /
``("add_u8", delta)`` so the multi-process executor runs them in C; their Python ``fn`` is the
reference implementation the ``--sp`` executor uses.

Anything that cannot be resolved (unknown family, import error, factory failure) raises
:class:`~byteor.SpecError` naming ``pipeline.stages.<i>.resolver_key`` before anything runs (exit 3).
A :class:`~byteor.PolicyRefused` from an action resolver propagates unchanged (exit 4).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata

from .._errors import PolicyRefused, SpecError, SpecIssue
from .._stage import ResolvedStage, StageContext, StageFn
from ..actions import resolve_action
from ..dataguard.stage import resolve_dataguard
from ..spec.families import BUILTIN_FAMILIES, ENTRY_POINT_GROUP, known_families
from ..spec.model import SingleRingSpecV1, StageV1

__all__ = [
    "BUILTIN_FAMILIES",
    "ENTRY_POINT_GROUP",
    "add_u8_fn",
    "close_stages",
    "identity_fn",
    "known_families",
    "resolve_key",
    "resolve_stage",
    "resolve_stages",
]


Factory = Callable[[str, StageContext], ResolvedStage]


def identity_fn(slot: memoryview, length: int) -> int:
    """The identity stage: the message passes unchanged."""
    return length


def add_u8_fn(delta: int) -> StageFn:
    """The reference ``add_u8`` kernel: every byte of the message += ``delta`` (mod 256)."""
    table = bytes((b + delta) & 0xFF for b in range(256))

    def add_u8(slot: memoryview, length: int) -> int:
        slot[:length] = slot[:length].tobytes().translate(table)
        return length

    return add_u8


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}




def _resolve_py(arg: str) -> ResolvedStage:
    module_name, sep, func_name = arg.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"expected py:<module>:<function>, got py:{arg}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is a resolution failure
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"module {module_name!r} has no callable {func_name!r}")
    modifies = bool(getattr(fn, "byteor_modifies", True))
    return ResolvedStage(key=f"py:{arg}", fn=fn, modifies=modifies, family="py", target=arg)


def resolve_key(key: str, ctx: StageContext) -> ResolvedStage:
    """Resolve one resolver key. Raises ValueError (no locator) or a ByteorError from the family."""
    family, sep, arg = key.partition(":")
    if not sep:
        raise ValueError(f"resolver key {key[:60]!r} has no family (expected family:argument)")
    if family == "py":
        return _resolve_py(arg)
    if family in ("http_post", "exec"):
        return resolve_action(key, ctx)
    if family == "dataguard":
        return resolve_dataguard(key, ctx)
    ep = _entry_points().get(family)
    if ep is None:
        raise ValueError(f"unknown resolver family {family!r} (known: {', '.join(known_families())})")
    try:
        factory: Factory = ep.load()
    except Exception as exc:
        raise ValueError(f"entry point {ENTRY_POINT_GROUP}:{family} failed to load: {exc}") from None
    resolved = factory(arg, ctx)
    if not isinstance(resolved, ResolvedStage):
        raise ValueError(f"entry point {ENTRY_POINT_GROUP}:{family} returned {type(resolved).__name__}, "
                         "not a ResolvedStage")
    return resolved


def resolve_stage(stage: StageV1, index: int, ctx: StageContext) -> ResolvedStage:
    """Resolve ``pipeline.stages.<index>`` (see the module docstring for errors)."""
    if stage.op == "identity":
        return ResolvedStage(key="identity", fn=identity_fn, modifies=False, builtin=("identity", 0))
    if stage.op == "add_u8":
        delta = 1 if stage.delta is None else stage.delta
        return ResolvedStage(key=f"add_u8:{delta}", fn=add_u8_fn(delta), modifies=True,
                             builtin=("add_u8", delta))
    locator = f"pipeline.stages.{index}.resolver_key"
    if stage.op != "resolver":
        raise SpecError(SpecIssue(f"pipeline.stages.{index}.op", f"unknown stage op {stage.op!r}"))
    if not stage.resolver_key:
        raise SpecError(SpecIssue(locator, "a resolver stage needs a resolver_key"))
    try:
        return resolve_key(stage.resolver_key, ctx)
    except PolicyRefused:
        raise
    except SpecError as exc:
        raise SpecError(SpecIssue(locator, f"stage {stage.id!r}: {exc}")) from None
    except Exception as exc:  # a factory's own failure: the stage cannot run, say which and why
        raise SpecError(SpecIssue(locator, f"stage {stage.id!r} cannot be resolved: {exc}")) from None


def resolve_stages(spec: SingleRingSpecV1, ctx: StageContext) -> list[ResolvedStage]:
    """Resolve every stage in index order; on failure, close the ones already resolved."""
    out: list[ResolvedStage] = []
    try:
        for i, stage in enumerate(spec.stages):
            out.append(resolve_stage(stage, i, ctx))
    except BaseException:
        close_stages(out)
        raise
    return out


def close_stages(stages: list[ResolvedStage]) -> None:
    """Call every stage's ``close`` (errors in one do not keep the others open)."""
    for st in stages:
        if st.close is not None:
            try:
                st.close()
            except Exception:  # closing is best effort; the run's own outcome stands
                continue
