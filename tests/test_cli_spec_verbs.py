"""The spec verbs through the installed console scripts: ``--help`` of every verb from all five
scripts, and real behaviour (exit codes, stdout/stderr) from ``byteor``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from byteor.spec import (
    canonical_bytes,
    decode_kv,
    load_spec_file,
    read_compile_report,
    spec_hash,
    spec_summary,
    validate_v1,
)
from conftest import CliRunner

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
BIN = Path(sys.executable).parent
SCRIPTS = ("byteor", "byteor-runtime", "byteor-edgeplane", "byteor-actiongraph", "byteor-dataguard")
VERBS = ("validate", "describe", "dot", "diff", "compile", "capabilities", "compatibility")


def test_every_spec_verb_has_help_in_every_script() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    procs = {
        (script, verb): subprocess.Popen(
            [str(BIN / script), verb, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for script in SCRIPTS
        for verb in VERBS
    }
    for (script, verb), proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (script, verb, err)
        assert out.startswith("usage: byteor-") and f" {verb}" in out.splitlines()[0], out
        assert "Exit code" in out, (script, verb)
    for script in SCRIPTS:
        top = subprocess.run(
            [str(BIN / script), "--help"], capture_output=True, text=True, timeout=60, check=False, env=env
        )
        assert all(verb in top.stdout for verb in VERBS), script


def test_validate(cli: CliRunner, tmp_path: Path) -> None:
    chain = EX / "chain.kv"
    digest = spec_hash(load_spec_file(chain))
    for args in ([str(chain)], [f"--spec={chain}"], ["--spec", str(chain)]):
        proc = cli("validate", *args)
        assert proc.returncode == 0 and proc.stdout == f"ok {digest}\n", proc.stderr
    proc = cli("validate", env={"BYTEOR_SPEC": str(chain)})
    assert proc.returncode == 0 and digest in proc.stdout
    proc = cli("validate", "--json", str(chain))
    assert json.loads(proc.stdout) == {"ok": True, "spec": str(chain), "hash": digest, "issues": []}
    bad = tmp_path / "bad.kv"
    bad.write_text(
        chain.read_text().replace("pipeline.ring.capacity=1024", "pipeline.ring.capacity=1000")
        + "pipeline.constraints.producer=mpmc\n"
    )
    proc = cli("validate", "--json", str(bad))
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["ok"] is False and {i["key"] for i in data["issues"]} == {
        "pipeline.ring.capacity",
        "pipeline.constraints.producer",
    }
    assert len(proc.stderr.strip().splitlines()) == 2
    proc = cli("validate")
    assert proc.returncode == 2 and "no spec given" in proc.stderr


def test_describe(cli: CliRunner) -> None:
    diamond = EX / "diamond.kv"
    proc = cli("describe", str(diamond))
    assert proc.returncode == 0, proc.stderr
    assert spec_hash(load_spec_file(diamond)) in proc.stdout
    for word in ("SingleRing", "shards 1", "ordering strict", "left", "add_u8", "delta 2", "waits for"):
        assert word in proc.stdout, word
    proc = cli("describe", "--json", str(diamond))
    assert json.loads(proc.stdout) == spec_summary(load_spec_file(diamond))
    proc = cli("describe", str(EX / "lanegraph.kv"))
    for word in ("LaneGraph", "on_full block", "journal", "fanout", "to-journal", "bridge", "ingress"):
        assert word in proc.stdout, word
    proc = cli("describe", "--canonical", str(EX / "sharded.kv"))
    assert proc.returncode == 0
    assert decode_kv(proc.stdout) == load_spec_file(EX / "sharded.kv")
    assert "pipeline.constraints.shard_key=bytes:0:4\n" in proc.stdout
    proc = cli("describe", "--canonical", "--json", str(diamond))
    assert proc.returncode == 2


def test_describe_refuses_invalid_specs(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.kv"
    bad.write_text("pipeline.name=x\npipeline.target=SingleRing\n")
    proc = cli("describe", str(bad))
    assert proc.returncode == 3 and "`pipeline.stages`" in proc.stderr and proc.stdout == ""


def test_dot(cli: CliRunner, tmp_path: Path) -> None:
    proc = cli("dot", str(EX / "lanegraph.kv"))
    assert proc.returncode == 0 and proc.stdout.startswith("// sha256:") and "digraph" in proc.stdout
    out = tmp_path / "g.svg"
    proc = cli("dot", str(EX / "diamond.kv"), f"--render={out}")
    if shutil.which("dot") is None:
        assert proc.returncode == 2 and "graphviz" in proc.stderr and not out.exists()
    else:
        assert proc.returncode == 0 and out.read_text().lstrip().startswith("<")
    proc = cli("dot", str(EX / "diamond.kv"), f"--render={tmp_path / 'g.bmp'}", env={"PATH": str(BIN)})
    assert proc.returncode == 2


def test_diff(cli: CliRunner, tmp_path: Path) -> None:
    a = EX / "chain.kv"
    shuffled = tmp_path / "shuffled.kv"
    lines = [ln for ln in a.read_text().splitlines() if ln and not ln.startswith("#")]
    shuffled.write_text(
        "\n".join(reversed([ln for ln in lines if ln != "pipeline.ring.capacity=1024"])) + "\n"
    )
    proc = cli("diff", str(a), str(shuffled))
    assert proc.returncode == 0 and proc.stdout == "" and "equal" in proc.stderr
    changed = tmp_path / "changed.kv"
    changed.write_text(a.read_text().replace("delta=1", "delta=7"))
    proc = cli("diff", str(a), str(changed))
    assert proc.returncode == 1
    assert proc.stdout == "- pipeline.stages.1.delta=1\n+ pipeline.stages.1.delta=7\n"
    proc = cli("diff", "--json", str(a), str(changed))
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["equal"] is False
    assert data["changes"] == [{"key": "pipeline.stages.1.delta", "old": "1", "new": "7"}]
    invalid = tmp_path / "invalid.kv"
    invalid.write_text(a.read_text() + "pipeline.constraints.producer=mpmc\n")
    assert cli("diff", str(a), str(invalid)).returncode == 3
    undecodable = tmp_path / "undecodable.kv"
    undecodable.write_text("pipeline.name=x\n")
    assert cli("diff", str(undecodable), str(a)).returncode == 3
    proc = cli("diff", str(a), str(tmp_path / "missing.kv"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_compile(cli: CliRunner, tmp_path: Path) -> None:
    out, report = tmp_path / "d.kv", tmp_path / "d.json"
    proc = cli("compile", "examples.plans:diamond", f"--out={out}", "--report", str(report), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    spec = load_spec_file(out)
    assert validate_v1(spec) == [] and [s.id for s in spec.stages] == ["src", "right", "left", "sink"]
    rep = read_compile_report(report)
    assert rep.spec == spec and "implicit_ordering" in {d.kind for d in rep.diagnostics}
    assert "wrote spec" in proc.stdout and "compile diagnostics" in proc.stdout
    assert cli("validate", str(out)).returncode == 0
    # File form, a zero-argument callable, --json, and the spec on stdout when --out is omitted.
    proc = cli("compile", f"{EX / 'plans.py'}:fan_in_out", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {d["kind"] for d in data["diagnostics"]} >= {"bridge", "router", "merge"}
    proc = cli("compile", f"{EX / 'plans.py'}:fan_in_out", cwd=tmp_path)
    assert decode_kv(proc.stdout).target == "LaneGraph" and "bridge" in proc.stderr


def test_compile_errors(cli: CliRunner, tmp_path: Path) -> None:
    plans = tmp_path / "myplans.py"
    plans.write_text(
        "from byteor.spec.plan import SingleRingPlanV2, PlanStageV2\n"
        "cyclic = SingleRingPlanV2('c', [PlanStageV2('a', after=['b']), PlanStageV2('b', after=['a'])])\n"
        "invalid = SingleRingPlanV2('c', [PlanStageV2('a')], producer='mpmc')\n"
        "number = 42\n"
        "def boom():\n    raise RuntimeError('no')\n"
    )
    cases = [
        ("myplans:cyclic", 3, "cycle"),
        ("myplans:invalid", 3, "pipeline.constraints.producer"),
        ("myplans:number", 2, "not a PipelinePlanV2"),
        ("myplans:boom", 2, "RuntimeError"),
        ("myplans:missing", 2, "no attribute"),
        ("nosuchmodule:x", 2, "cannot import"),
        ("no-colon", 2, "MODULE:ATTR"),
        ("ghost.py:x", 2, "does not exist"),
    ]
    for target, code, needle in cases:
        proc = cli("compile", target, cwd=tmp_path)
        assert proc.returncode == code, (target, proc.stderr)
        assert needle in proc.stderr, (target, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_capabilities(cli: CliRunner) -> None:
    proc = cli("capabilities", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["stage_ops"] == ["identity", "add_u8", "resolver"]
    assert data["resolver_families"]["builtin"] == ["http_post", "exec", "dataguard", "py"]
    assert data["lane_kinds"] == ["events", "mpsc", "fanout", "journal"]
    assert data["role_kinds"] == ["stage", "bridge", "router", "merge"]
    assert [a["name"] for a in data["adapters"]] == ["kafka", "nats", "redis", "rabbitmq-stream", "mqtt", "grpc",
                                                     "postgresql", "s3", "http", "https", "ws"]
    assert all(a["installed"] and a["version"] for a in data["adapters"]), data["adapters"]  # the test extras
    assert {a["extra"] for a in data["adapters"]} == {"kafka", "nats", "redis", "rabbitmq", "mqtt", "grpc", "postgres",
                                                      "s3", "http", "websocket"}
    import byteor._native as native

    assert data["native_abi"] == native.ABI_VERSION
    text = cli("capabilities").stdout
    for word in ("stage ops", "resolver families", "lane kinds", "wait strategies", "native ABI", "adapters"):
        assert word in text


def test_compatibility(cli: CliRunner, tmp_path: Path) -> None:
    proc = cli("compatibility", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["spec_format"] == {"name": "spec.kv", "version": 1}
    assert data["schema_versions"]["compile_report"] == 1 and "spec" not in data
    proc = cli("compatibility", f"--spec={EX / 'chain.kv'}")
    assert proc.returncode == 0 and "can run: yes" in proc.stdout, proc.stdout + proc.stderr
    bad = tmp_path / "bad.kv"
    bad.write_text((EX / "chain.kv").read_text() + "pipeline.constraints.producer=mpmc\n")
    proc = cli("compatibility", "--json", str(bad))
    data = json.loads(proc.stdout)
    assert proc.returncode == 3 and data["spec"]["can_run"] is False
    assert any("pipeline.constraints.producer" in r for r in data["spec"]["reasons"])
    unresolvable = tmp_path / "py.kv"
    unresolvable.write_text(
        "pipeline.name=p\npipeline.target=SingleRing\npipeline.stages.0.id=a\n"
        "pipeline.stages.0.op=resolver\npipeline.stages.0.resolver_key=py:no_such_mod_xyz:fn\n"
    )
    proc = cli("compatibility", str(unresolvable))
    assert proc.returncode == 3 and "can run: no" in proc.stdout and "no_such_mod_xyz" in proc.stdout
    undecodable = tmp_path / "u.kv"
    undecodable.write_bytes(b"\xef\xbb\xbfpipeline.name=x\n")
    proc = cli("compatibility", str(undecodable))
    assert proc.returncode == 3 and "undecodable" in proc.stdout
    assert cli("compatibility", str(tmp_path / "missing.kv")).returncode == 2


@pytest.mark.parametrize("script", SCRIPTS[1:])
def test_other_scripts_run_the_same_verbs(cli: CliRunner, script: str) -> None:
    proc = cli("validate", str(EX / "example.kv"), script=script)
    assert proc.returncode == 0 and proc.stdout.startswith("ok sha256:")


def test_published_example_through_the_console_script(cli: CliRunner) -> None:
    example = EX / "example.kv"
    spec = load_spec_file(example)
    assert cli("validate", str(example)).returncode == 0
    canonical = cli("describe", "--canonical", f"--spec={example}")
    assert canonical.returncode == 0 and canonical.stdout.encode() == canonical_bytes(spec)
    digest = cli("approval", "hash", str(example))
    assert digest.returncode == 0 and digest.stdout == spec_hash(spec) + "\n"
    assert digest.stdout.strip() == "sha256:" + hashlib.sha256(canonical.stdout.encode()).hexdigest()
