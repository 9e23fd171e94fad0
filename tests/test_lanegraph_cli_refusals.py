"""`byteor run` refuses a valid LaneGraph whose shape the runners do not support: exit 3 with the
reason, in both runners, before any lane file exists (never best effort)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanegraph_helpers import lanegraph_kv

TWO_INGRESS = lanegraph_kv(
    "two_in",
    [{"name": "a", "kind": "mpsc"}, {"name": "b", "kind": "events"}],
    [("i1", "ingress", "a"), ("i2", "ingress", "a"), ("out", "egress", "b")],
    [{"name": "s", "kind": "bridge", "inputs": ["a"], "outputs": ["b"]}],
)


@pytest.mark.parametrize("sp", [True, False])
def test_unsupported_shape_is_refused_with_exit_3(sp: bool, tmp_path: Path, cli) -> None:
    spec = tmp_path / "two.kv"
    spec.write_text(TWO_INGRESS)
    assert cli("validate", str(spec)).returncode == 0  # valid: the refusal is the executor's
    lanes = tmp_path / "lanes"
    args = ["run", *(["--sp"] if sp else []), f"--spec={spec}", "--input-hex=00", f"--lane-path={lanes}"]
    res = cli(*args, env={"BYTEOR_JOURNAL_DIR": str(tmp_path / "j")})
    assert res.returncode == 3, res.stderr
    assert "LaneGraph shape not supported" in res.stderr and "exactly one ingress endpoint" in res.stderr
    assert "this graph has 2" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == "" and not lanes.exists()
    compat = cli("compatibility", str(spec))
    assert compat.returncode == 3 and "can run: no" in compat.stdout
    assert "exactly one ingress endpoint" in compat.stdout
