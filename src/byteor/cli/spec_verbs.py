"""The spec verbs: ``validate``, ``describe``, ``dot``, ``diff``, ``compile``, ``capabilities``,
``compatibility``. One module, dispatched on the verb name; every product script offers them.

Exit codes: 0 ok, 1 ``diff`` found differences, 2 usage error (missing file, bad
option, no graphviz for ``--render``), 3 invalid or undecodable spec (``compatibility --spec``: the
spec cannot run here).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
from typing import Any

from .._errors import SpecError, SpecIssue, UsageError
from .._fileio import write_text_atomic
from ..spec.kv import encode_kv, load_spec_file, spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ._common import (
    add_json_option,
    add_spec_option,
    emit_json,
    load_spec,
    spec_path,
    stdout_console,
)

_EPILOG = "Exit codes: 0 ok, 2 usage error or missing file, 3 invalid spec."


def configure(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.epilog = _EPILOGS.get(verb, _EPILOG)
    if verb == "validate":
        parser.description = ("Decode a spec.kv and check every validate_v1 rule. Prints `ok <hash>`, or "
                              "every problem on stderr, one per line, naming its key.")
        add_spec_option(parser)
        add_json_option(parser)
    elif verb == "describe":
        parser.description = ("Summarize a valid spec: model, hash, constraints, stages with ops and "
                              "dependencies, or lanes, roles and endpoints with their kinds.")
        add_spec_option(parser)
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--json", action="store_true",
                           help="the parsed-spec summary as JSON (the policy audit's `spec` field)")
        group.add_argument("--canonical", action="store_true",
                           help="print the canonical spec.kv exactly (the bytes the hash is taken over)")
    elif verb == "dot":
        parser.description = ("Graphviz DOT of the stage DAG (SingleRing; dashed edges are implicit "
                              "orderings) or of the lane graph, on stdout.")
        add_spec_option(parser)
        parser.add_argument("--render", metavar="OUT",
                            help="render with graphviz `dot` to OUT (format from the extension: "
                                 ".svg, .png, .pdf); exit 2 when graphviz is not installed")
    elif verb == "diff":
        parser.description = ("Field-level semantic diff of two specs by key, on canonical forms: line "
                              "order, comments and omitted defaults never count. Prints `- key=old` / "
                              "`+ key=new`.")
        parser.add_argument("a", metavar="A", help="the old spec.kv")
        parser.add_argument("b", metavar="B", help="the new spec.kv")
        add_json_option(parser)
    elif verb == "compile":
        parser.description = ("Lower a PipelinePlanV2 written in Python (MODULE:ATTR, or FILE.py:ATTR; ATTR "
                              "is a plan or a zero-argument callable returning one) to a validated "
                              "spec.kv and a compile report.")
        parser.add_argument("target", metavar="MODULE:ATTR", help="e.g. examples.plans:diamond")
        parser.add_argument("--out", metavar="SPEC_KV",
                            help="write the canonical spec here (default: stdout)")
        parser.add_argument("--report", metavar="JSON", help="write the compile report (JSON v1) here")
        add_json_option(parser)
    elif verb == "capabilities":
        parser.description = ("What this build can run: stage ops, resolver families, lane and role kinds, "
                              "wait strategies, native ABI, adapters, features.")
        add_json_option(parser)
    elif verb == "compatibility":
        parser.description = ("Formats and versions this build reads and writes (spec format, artifact "
                              "schema versions, native ABI). With a spec: can this build run it, and "
                              "if not, why.")
        add_spec_option(parser)
        add_json_option(parser)
    else:  # pragma: no cover - the verb table only routes the verbs above here
        raise UsageError(f"spec_verbs does not implement {verb!r}")


_EPILOGS = {
    "validate": "Exit codes: 0 valid, 2 missing file, 3 undecodable or invalid.",
    "diff": "Exit codes: 0 equivalent, 1 different, 2 missing file, 3 either spec undecodable or invalid.",
    "compile": "Exit codes: 0 compiled, 2 cannot import the plan, 3 the plan cannot be lowered or the "
               "result is invalid.",
    "compatibility": "Exit codes: 0 (with a spec: it can run here), 2 missing file, 3 the spec cannot run.",
    "capabilities": "Exit code: 0.",
}


def run(args: argparse.Namespace) -> int:
    handler = {
        "validate": _validate,
        "describe": _describe,
        "dot": _dot,
        "diff": _diff,
        "compile": _compile,
        "capabilities": _capabilities,
        "compatibility": _compatibility,
    }[args.verb]
    return handler(args)


# --------------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    path = spec_path(args)
    try:
        loaded = load_spec(args)
    except SpecError as exc:
        if args.json:
            emit_json({"ok": False, "spec": path, "hash": None,
                       "issues": [_issue_json(i) for i in exc.issues]})
        raise
    if args.json:
        emit_json({"ok": True, "spec": path, "hash": loaded.hash, "issues": []})
    else:
        print(f"ok {loaded.hash}")
    return 0


def _issue_json(issue: SpecIssue) -> dict[str, Any]:
    return {"key": issue.key, "line": issue.line, "message": issue.message}


# --------------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------------


def _describe(args: argparse.Namespace) -> int:
    from ..spec.summary import spec_summary

    loaded = load_spec(args)
    if args.canonical:
        sys.stdout.write(encode_kv(loaded.spec))
        return 0
    summary = spec_summary(loaded.spec)
    if args.json:
        emit_json(summary)
        return 0
    from rich.table import Table

    con = stdout_console()
    con.print(f"[bold]{loaded.spec.name}[/]  {summary['model']}  {loaded.hash}")
    con.print(f"spec {loaded.path}")
    if isinstance(loaded.spec, SingleRingSpecV1):
        from ..spec.semantics import effective_deps

        sr = summary["single_ring"]
        con.print(f"shards {sr['shards']}  ordering {sr['ordering']}  producer {sr['producer']}  "
                  f"scheduling {sr['scheduling']}  shard_key {sr['shard_key'] or 'none'}")
        con.print(f"ring capacity {sr['capacity']} x {sr['slot_bytes']} bytes  "
                  f"ingress {sr['ingress']}  egress {sr['egress']}")
        table = Table(title=f"{sr['stage_count']} stages")
        for col in ("#", "id", "op", "detail", "depends_on", "waits for (effective)"):
            table.add_column(col)
        eff = effective_deps(loaded.spec)
        for st, deps in zip(sr["stages"], eff, strict=True):
            detail = (f"delta {st['delta']}" if st["op"] == "add_u8"
                      else st["resolver_key"] if st["op"] == "resolver" else "")
            table.add_row(str(st["index"]), st["id"], st["op"], detail,
                          ", ".join(map(str, st["depends_on"])) or "-",
                          ", ".join(map(str, sorted(deps))) or "-")
        con.print(table)
    else:
        lg = summary["lane_graph"]
        con.print(f"on_full {lg['on_full']}  lanes {lg['lane_count']} "
                  f"({', '.join(f'{k} {n}' for k, n in lg['lane_kinds'].items())})  roles {lg['role_count']} "
                  f"({', '.join(f'{k} {n}' for k, n in lg['role_kinds'].items())})  endpoints "
                  f"{lg['endpoint_count']}")
        lanes = Table(title="lanes")
        for col in ("name", "kind", "capacity", "slot_bytes", "fanout/segment", "on_full"):
            lanes.add_column(col)
        for lane in lg["lanes"]:
            extra = lane.get("fanout", lane.get("segment_bytes", ""))
            lanes.add_row(lane["name"], lane["kind"], str(lane.get("capacity", "-")), str(lane["slot_bytes"]),
                          str(extra if extra is not None else ""), lane["on_full"])
        con.print(lanes)
        roles = Table(title="roles")
        for col in ("name", "kind", "inputs", "outputs", "detail"):
            roles.add_column(col)
        for role in lg["roles"]:
            detail = role.get("route") or role.get("resolver_key") or role.get("op", "")
            if role.get("op") == "add_u8":
                detail = f"add_u8 delta {role['delta']}"
            roles.add_row(role["name"], role["kind"], ", ".join(role["inputs"]), ", ".join(role["outputs"]),
                          str(detail or ""))
        con.print(roles)
        eps = Table(title="endpoints")
        for col in ("name", "direction", "lane"):
            eps.add_column(col)
        for ep in lg["endpoints"]:
            eps.add_row(ep["name"], ep["direction"], ep["lane"])
        con.print(eps)
    return 0


# --------------------------------------------------------------------------------------------------
# dot
# --------------------------------------------------------------------------------------------------


def _dot(args: argparse.Namespace) -> int:
    from ..spec.dot import RENDER_FORMATS, render_dot, to_dot

    loaded = load_spec(args)
    text = to_dot(loaded.spec)
    if not args.render:
        sys.stdout.write(text)
        return 0
    fmt = os.path.splitext(args.render)[1].lstrip(".").lower() or "svg"
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"--render {args.render}: unsupported extension .{fmt}; use .svg, .png or .pdf")
    try:
        render_dot(text, fmt, out=args.render)
    except UsageError as exc:
        raise UsageError(f"--render: {exc}") from None
    print(f"wrote {args.render}")
    return 0


# --------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------


def _load_checked(path: str) -> PipelineSpecV1:
    from ..spec.validate import check_v1

    spec = load_spec_file(path)
    check_v1(spec, path=path)
    return spec


def _diff(args: argparse.Namespace) -> int:
    from ..spec.diff import spec_diff

    a = _load_checked(args.a)
    b = _load_checked(args.b)
    changes = spec_diff(a, b)
    if args.json:
        emit_json({"equal": not changes,
                   "a": {"path": args.a, "hash": spec_hash(a)},
                   "b": {"path": args.b, "hash": spec_hash(b)},
                   "changes": [c.to_json() for c in changes]})
    else:
        for change in changes:
            for line in change.lines():
                print(line)
        if not changes:
            print(f"equal {spec_hash(a)}", file=sys.stderr)
    return 1 if changes else 0


# --------------------------------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------------------------------


def _import_target(target: str) -> object:
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"compile target must be MODULE:ATTR or FILE.py:ATTR, got {target!r}")
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise UsageError(f"{module_name}: plan file does not exist")
        spec = importlib.util.spec_from_file_location("_byteor_plan", module_name)
        if spec is None or spec.loader is None:
            raise UsageError(f"{module_name}: cannot load as a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SpecError:
            raise
        except Exception as exc:
            raise UsageError(f"{module_name}: importing the plan failed: "
                             f"{type(exc).__name__}: {exc}") from None
    else:
        cwd = os.getcwd()
        if cwd not in sys.path:  # like `python -m`: the current directory is importable
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"cannot import plan module {module_name!r}: {exc}") from None
        except SpecError:
            raise
        except Exception as exc:
            raise UsageError(f"importing plan module {module_name!r} failed: "
                             f"{type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"plan module {module_name!r} has no attribute {attr!r}") from None


def _write_atomic(path: str, data: str) -> None:
    try:
        write_text_atomic(path, data, make_dirs=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _compile(args: argparse.Namespace) -> int:
    from ..spec.plan import LaneGraphPlanV2, SingleRingPlanV2, lower_v2

    obj = _import_target(args.target)
    plan_types = (SingleRingPlanV2, LaneGraphPlanV2)
    if not isinstance(obj, plan_types) and callable(obj):
        try:
            obj = obj()
        except SpecError:
            raise
        except Exception as exc:
            raise UsageError(f"{args.target}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, plan_types):
        raise UsageError(f"{args.target} is a {type(obj).__name__}, not a PipelinePlanV2 "
                         "(SingleRingPlanV2 or LaneGraphPlanV2) or a callable returning one")
    spec, report = lower_v2(obj)
    text = encode_kv(spec)
    if args.out:
        _write_atomic(args.out, text)
    if args.report:
        try:
            report.write(args.report)
        except OSError as exc:
            raise UsageError(f"{args.report}: cannot write the compile report: {exc.strerror}") from None
    if args.json:
        emit_json({"spec_path": args.out, "report_path": args.report, **report.to_json()})
        return 0
    if not args.out:
        sys.stdout.write(text)
    from rich.console import Console
    from rich.table import Table

    con = stdout_console() if args.out else Console(stderr=True, highlight=False, soft_wrap=True)
    con.print(f"compiled {args.target} -> {spec.target} {spec.name!r} {spec_hash(spec)}")
    table = Table(title=f"{len(report.diagnostics)} compile diagnostics")
    for col in ("kind", "subject", "message"):
        table.add_column(col)
    for d in report.diagnostics:
        table.add_row(d.kind, d.subject, d.message)
    con.print(table)
    for label, path in (("spec", args.out), ("report", args.report)):
        if path:
            con.print(f"wrote {label} {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# capabilities and compatibility
# --------------------------------------------------------------------------------------------------


def _capabilities_data() -> dict[str, Any]:
    from .. import _native as native
    from ..spec.families import BUILTIN_FAMILIES, entry_point_families
    from ..spec.model import (
        LANE_KINDS,
        MAX_FANOUT,
        MAX_STAGES,
        ON_FULL,
        ORDERINGS,
        ROLE_KINDS,
        STAGE_OPS,
    )

    waits = sorted(n[len("WAIT_"):].lower() for n in dir(native) if n.startswith("WAIT_"))
    from ..adapters import available_adapters

    features = {
        "native_extension": True,
        "native_journal": True,
        "graphviz_render": shutil.which("dot") is not None,
    }
    return {
        "stage_ops": list(STAGE_OPS),
        "resolver_families": {"builtin": list(BUILTIN_FAMILIES),
                              "entry_points": list(entry_point_families())},
        "targets": ["SingleRing", "LaneGraph"],
        "orderings": list(ORDERINGS),
        "lane_kinds": list(LANE_KINDS),
        "role_kinds": list(ROLE_KINDS),
        "on_full": list(ON_FULL),
        "limits": {"max_stages": MAX_STAGES, "max_fanout": MAX_FANOUT},
        "wait_strategies": waits,
        "native_abi": getattr(native, "ABI_VERSION", None) if native else None,
        "adapters": available_adapters(),
        "features": features,
    }


def _capabilities(args: argparse.Namespace) -> int:
    data = _capabilities_data()
    if args.json:
        emit_json(data)
        return 0
    from rich.table import Table

    fams = data["resolver_families"]
    table = Table(title="byteor capabilities", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("stage ops", ", ".join(data["stage_ops"]))
    table.add_row("resolver families", ", ".join(fams["builtin"] + fams["entry_points"]))
    table.add_row("targets", ", ".join(data["targets"]))
    table.add_row("lane kinds", ", ".join(data["lane_kinds"]))
    table.add_row("role kinds", ", ".join(data["role_kinds"]))
    table.add_row("limits", f"{data['limits']['max_stages']} stages per ring, fanout <= "
                            f"{data['limits']['max_fanout']}")
    table.add_row("wait strategies", ", ".join(data["wait_strategies"]) or "none exposed by byteor._native")
    table.add_row("native ABI", str(data["native_abi"]) if data["native_abi"] is not None else "not built")
    table.add_row("adapters", ", ".join(
        f"{a['uri']} ({a['client']} {a['version']})" if a["installed"]
        else f"{a['uri']} (not installed: pip install 'byteor[{a['extra']}]')" for a in data["adapters"]))
    table.add_row("features", ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in data["features"].items()))
    stdout_console().print(table)
    return 0


def _resolver_keys(spec: PipelineSpecV1) -> list[tuple[str, str]]:
    if isinstance(spec, SingleRingSpecV1):
        return [(f"pipeline.stages.{i}.resolver_key", st.resolver_key)
                for i, st in enumerate(spec.stages) if st.op == "resolver" and st.resolver_key]
    assert isinstance(spec, LaneGraphSpecV1)
    return [(f"pipeline.roles.{i}.resolver_key", r.resolver_key)
            for i, r in enumerate(spec.roles) if r.kind == "stage" and r.op == "resolver" and r.resolver_key]


def _compatibility(args: argparse.Namespace) -> int:
    from .. import _native as native
    from .._schemas import SCHEMA_VERSIONS
    from ..runtime.support import unsupported_reasons
    from ..spec.families import resolvable

    data: dict[str, Any] = {
        "spec_format": {"name": "spec.kv", "version": SCHEMA_VERSIONS.get("spec_kv", 1)},
        "schema_versions": dict(SCHEMA_VERSIONS),
        "native_abi": native.ABI_VERSION,
    }
    given = getattr(args, "spec", None) or getattr(args, "spec_pos", None) or os.environ.get("BYTEOR_SPEC")
    code = 0
    if given:
        path = str(given)
        reasons: list[str] = []
        spec_block: dict[str, Any] = {"path": path, "hash": None, "valid": False}
        try:
            spec = load_spec_file(path)
        except SpecError as exc:
            reasons += [f"undecodable: {line}" for line in exc.lines()]
        else:
            from ..spec.validate import validate_v1

            spec_block["hash"] = spec_hash(spec)
            spec_block["target"] = spec.target
            issues = validate_v1(spec)
            spec_block["valid"] = not issues
            reasons += [f"invalid: {i}" for i in issues]
            for key, rk in _resolver_keys(spec):
                why = resolvable(rk)
                if why is not None:
                    reasons.append(f"not resolvable: {why} at `{key}`")
            if not issues:
                reasons += [f"unsupported: {r}" for r in unsupported_reasons(spec)]
        spec_block["can_run"] = not reasons
        spec_block["reasons"] = reasons
        data["spec"] = spec_block
        code = 0 if not reasons else 3
    if args.json:
        emit_json(data)
        return code
    from rich.table import Table

    con = stdout_console()
    con.print(f"spec format: {data['spec_format']['name']} v{data['spec_format']['version']}   native ABI: "
              f"{data['native_abi'] if data['native_abi'] is not None else 'not built'}")
    table = Table(title="artifact schema versions")
    table.add_column("format")
    table.add_column("version", justify="right")
    for name, version in data["schema_versions"].items():
        table.add_row(name, str(version))
    con.print(table)
    if "spec" in data:
        sb = data["spec"]
        con.print(f"spec {sb['path']}  {sb['hash'] or '(undecodable)'}")
        if "executor_check" in sb and sb["executor_check"].startswith("skipped"):
            con.print(f"executor support check {sb['executor_check']}")
        if sb["can_run"]:
            con.print("can run: [green]yes[/]")
        else:
            con.print("can run: [bold red]no[/]")
            for reason in sb["reasons"]:
                con.print(f"  - {reason}")
    return code
