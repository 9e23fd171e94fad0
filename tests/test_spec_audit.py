"""More spec-layer cases: the validation and format cases the rule tables in
``test_spec_validate.py`` / ``test_spec_kv.py`` did not have (unknown lane kind, role kind, endpoint
direction and ``on_full`` values, duplicate role names, a zero-length router key, an empty egress
name), each naming its key with exit 3, and a bad enum value is reported once, never also as
"missing"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byteor import SpecDecodeError
from byteor.cli import main
from byteor.spec import decode_kv, validate_v1
from conftest import BIN, EXAMPLES, CliRunner

LG = """pipeline.name=graph
pipeline.target=LaneGraph
pipeline.lanes.0.name=in
pipeline.lanes.0.kind=events
pipeline.lanes.1.name=out
pipeline.lanes.1.kind=events
pipeline.endpoints.0.name=src
pipeline.endpoints.0.direction=ingress
pipeline.endpoints.0.lane=in
pipeline.endpoints.1.name=dst
pipeline.endpoints.1.direction=egress
pipeline.endpoints.1.lane=out
pipeline.roles.0.name=work
pipeline.roles.0.kind=stage
pipeline.roles.0.inputs.0=in
pipeline.roles.0.outputs.0=out
"""

TAP = (
    "pipeline.lanes.2.name=j\npipeline.lanes.2.kind=journal\n"
    "pipeline.lanes.3.name=k\npipeline.lanes.3.kind=journal\n"
)

# (case id, spec text, key named, 1-based line of a decode error or None for a validation rule)
CASES: list[tuple[str, str, str, int | None]] = [
    ("lane-kind-unknown", LG.replace("lanes.1.kind=events", "lanes.1.kind=pipe"), "pipeline.lanes.1.kind", 6),
    ("role-kind-unknown", LG.replace("roles.0.kind=stage", "roles.0.kind=worker"), "pipeline.roles.0.kind", 14),
    (
        "direction-unknown",
        LG.replace("endpoints.1.direction=egress", "endpoints.1.direction=sideways"),
        "pipeline.endpoints.1.direction",
        11,
    ),
    ("on-full-unknown", LG + "pipeline.on_full=explode\n", "pipeline.on_full", 17),
    ("lane-on-full-unknown", LG + "pipeline.lanes.0.on_full=maybe\n", "pipeline.lanes.0.on_full", 17),
    (
        "role-name-duplicate",
        LG + TAP + "pipeline.roles.1.name=work\npipeline.roles.1.kind=bridge\n"
        "pipeline.roles.1.inputs.0=j\npipeline.roles.1.outputs.0=k\n",
        "pipeline.roles.1.name",
        None,
    ),
    (
        "router-key-zero-length",
        LG + TAP + "pipeline.roles.1.name=r\npipeline.roles.1.kind=router\npipeline.roles.1.route=bytes:0:0\n"
        "pipeline.roles.1.inputs.0=out\npipeline.roles.1.outputs.0=j\npipeline.roles.1.outputs.1=k\n",
        "pipeline.roles.1.route",
        None,
    ),
    (
        "egress-empty",
        "pipeline.name=a\npipeline.target=SingleRing\npipeline.egress=\npipeline.stages.0.id=x\n",
        "pipeline.egress",
        None,
    ),
]


@pytest.mark.parametrize(("text", "key", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_or_decode_error_names_its_key(
    text: str, key: str, line: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if line is not None:
        with pytest.raises(SpecDecodeError) as err:
            decode_kv(text)
        # reported once, on its own line, as a bad value (not also as a missing key)
        assert [(i.line, "missing" in i.message) for i in err.value.issues if i.key == key] == [(line, False)]
    else:
        assert key in [i.key for i in validate_v1(decode_kv(text))]
    path = tmp_path / "spec.kv"
    path.write_text(text)
    assert main(["validate", str(path)]) == 3
    captured = capsys.readouterr()
    assert f"`{key}`" in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_a_really_missing_field_is_still_reported_as_missing() -> None:
    text = LG.replace("pipeline.lanes.1.kind=events\n", "")
    with pytest.raises(SpecDecodeError) as err:
        decode_kv(text)
    assert [(i.key, i.message) for i in err.value.issues] == [("pipeline.lanes.1.kind", "missing required key")]


SCRIPTS = ("byteor", "byteor-runtime", "byteor-edgeplane", "byteor-actiongraph", "byteor-dataguard")


def test_approval_hash_help_explains_it_in_every_script() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    procs = [subprocess.Popen([str(BIN / s), "approval", "hash", "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for s in SCRIPTS]
    for script, proc in zip(SCRIPTS, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (script, err)
        assert "approval hash" in out.splitlines()[0], out
        text = " ".join(out.split())
        assert "sha256:<lowercase hex> of the canonical KV" in text and "Exit codes" in text, (script, out)


def test_capabilities_features_and_compatibility_native_abi(cli: CliRunner) -> None:
    import byteor._native as native

    caps = json.loads(cli("capabilities", "--json").stdout)
    assert caps["features"]["native_extension"] is True and caps["features"]["native_journal"] is True
    assert isinstance(caps["features"]["graphviz_render"], bool)
    assert "features" in cli("capabilities").stdout
    compat = json.loads(cli("compatibility", "--json").stdout)
    assert compat["native_abi"] == native.ABI_VERSION
    text = cli("compatibility").stdout
    assert "native ABI" in text and str(native.ABI_VERSION) in text


def test_dot_render_hands_the_dot_text_to_graphviz(cli: CliRunner, tmp_path: Path) -> None:
    """No graphviz on this machine: a stand-in ``dot`` program on PATH records how byteor calls it
    (format flag, output path, the DOT text on stdin) and fails on request, so the render path and
    its error message are exercised here too (the real renderer is graphviz's business)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "dot-call.json"
    fake = bindir / "dot"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "text = sys.stdin.read()\n"
        f"open({str(log)!r}, 'w').write(json.dumps({{'args': args, 'stdin': text}}))\n"
        "if 'fail' in args[-1]:\n"
        "    sys.stderr.write('Error: syntax error in line 1\\n')\n"
        "    sys.exit(1)\n"
        "open(args[args.index('-o') + 1], 'w').write('<svg/>')\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{bindir}{os.pathsep}{BIN}"}
    spec = EXAMPLES / "diamond.kv"
    plain = cli("dot", str(spec))
    out = tmp_path / "g.png"
    r = cli("dot", str(spec), f"--render={out}", env=env)
    assert r.returncode == 0, r.stderr
    call = json.loads(log.read_text())
    assert call["args"] == ["-Tpng", "-o", str(out)] and call["stdin"] == plain.stdout
    assert out.read_text() == "<svg/>"
    r = cli("dot", str(spec), f"--render={tmp_path / 'fail.svg'}", env=env)
    assert r.returncode == 2 and "graphviz `dot` failed: Error: syntax error" in r.stderr
    assert "Traceback" not in r.stderr
