"""The stage registry: every stage of a spec is resolved ONCE, at startup, into a ResolvedStage.

Families of ``pipeline.stages.<i>.resolver_key`` (``family:argument``):

=============  ===========================================================================
``py``         ``py:package.module:function`` imports ``function`` from the spec's directory
               first, then ``sys.path``; its form (map, filter, in place, read-only) comes from
               its signature and ``byteor_modifies`` marker (:func:`byteor.stage_form`).
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
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from .._errors import PolicyRefused, SpecError, SpecIssue
from .._stage import ResolvedStage, StageContext, StageContractError, StageFn, stage_form
from ..spec.families import BUILTIN_FAMILIES, ENTRY_POINT_GROUP, known_families
from ..spec.model import SingleRingSpecV1, StageV1

if TYPE_CHECKING:
    from importlib import metadata

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
    from importlib import metadata  # here: only plug-in families need the distributions scanned

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}




#: ``ctx.extra`` key: the path of the program whose ``__main__`` defines ``py:__main__:`` stages, so
#: stage processes (whose own ``__main__`` is the stage runner) can import it under another name.
MAIN_PATH_KEY = "py_main_path"
_MAIN_ALIAS = "__byteor_main__"


def _import_stage_module(module_name: str, ctx: StageContext) -> ModuleType:
    """Import a ``py:`` stage module: the spec file's own directory first, then ``sys.path``.

    ``__main__`` is the running program's module when it defines the function; in a stage process
    the program file is imported as ``__byteor_main__`` (so its ``if __name__ == "__main__":``
    block does not run again, exactly as with ``multiprocessing``'s spawn start method)."""
    spec_dir = os.path.abspath(ctx.spec_dir)
    if os.path.isdir(spec_dir) and spec_dir not in sys.path:
        sys.path.insert(0, spec_dir)
    if module_name == "__main__":
        main = sys.modules.get("__main__")
        main_path = ctx.extra.get(MAIN_PATH_KEY)
        if main is not None and (not main_path or os.path.abspath(getattr(main, "__file__", "") or "")
                                 == os.path.abspath(str(main_path))):
            return main
        if not main_path:
            raise ValueError("py:__main__: stages need the program's path (run them from a script file)")
        loaded = sys.modules.get(_MAIN_ALIAS)
        if loaded is None:
            spec = importlib.util.spec_from_file_location(_MAIN_ALIAS, str(main_path))
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot import the program {main_path} that defines py:__main__: stages")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[_MAIN_ALIAS] = loaded
            spec.loader.exec_module(loaded)
        return loaded
    return importlib.import_module(module_name)


def _resolve_py(arg: str, ctx: StageContext) -> ResolvedStage:
    module_name, sep, func_name = arg.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"expected py:<module>:<function>, got py:{arg}")
    try:
        module = _import_stage_module(module_name, ctx)
    except ValueError:
        raise
    except Exception as exc:  # any failure while importing user code is a resolution failure
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"module {module_name!r} has no callable {func_name!r}")
    try:
        form = stage_form(fn)
    except StageContractError as exc:
        raise ValueError(f"py:{arg} {exc}") from None
    return ResolvedStage(key=f"py:{arg}", fn=fn, form=form, family="py", target=arg)


def resolve_key(key: str, ctx: StageContext) -> ResolvedStage:
    """Resolve one resolver key. Raises ValueError (no locator) or a ByteorError from the family."""
    family, sep, arg = key.partition(":")
    if not sep:
        raise ValueError(f"resolver key {key[:60]!r} has no family (expected family:argument)")
    if family == "py":
        return _resolve_py(arg, ctx)
    # families imported when used: a stage process starts with its ring waiting, and the action
    # families pull in the policy gate and an HTTP client that a py: or builtin stage never needs
    if family in ("http_post", "exec"):
        from ..actions import resolve_action

        return resolve_action(key, ctx)
    if family == "dataguard":
        from ..dataguard.stage import resolve_dataguard

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
