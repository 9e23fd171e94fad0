"""Approvals through the real `run` verb against a real local HTTP server: every rejection of the
matrix refuses to start (exit 4, the failed check named) and posts nothing; a verified approval lets
`byteor-actiongraph run` in staging post exactly once."""

from __future__ import annotations

import hashlib
from pathlib import Path

from byteor import load_spec_file, spec_hash
from policy_support import HttpTarget, new_signer, rejection_matrix, write_key_set, write_spec


def test_every_rejected_approval_refuses_run_and_posts_nothing(http_target: HttpTarget, tmp_path: Path,
                                                                cli) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{http_target.base}/hook")
    h = spec_hash(load_spec_file(spec_path))
    signer = new_signer("k1")
    keys = write_key_set(tmp_path / "keys.json", signer)
    for case, (cred, check) in rejection_matrix(h, signer, tmp_path).items():
        res = cli("run", "--sp", str(spec_path), "--input-ascii=hi", "--env=staging", f"--approval={cred}",
                  f"--approval-key-set={keys}")
        assert res.returncode == 4, (case, res.stdout, res.stderr)
        assert f"approval {check} check failed" in res.stderr, (case, res.stderr)
        assert "stage 1 'act1'" in res.stderr and "RequireApproval" in res.stderr, (case, res.stderr)
        assert cred.split(".")[0] not in res.stderr + res.stdout, case
        assert "Traceback" not in res.stderr and res.stdout == "", case
    assert http_target.recorder.posts() == []


def test_verified_approval_lets_actiongraph_run_post_once(http_target: HttpTarget, tmp_path: Path, cli) -> None:
    spec_path = write_spec(tmp_path, f"http_post:{http_target.base}/hook")
    h = spec_hash(load_spec_file(spec_path))
    signer = new_signer("k1")
    keys = write_key_set(tmp_path / "keys.json", signer)
    cred_file = tmp_path / "ok.cred"
    cred_file.write_text(signer.issue(h, "staging", ["http_post"]) + "\n")
    res = cli("run", str(spec_path), "--sp", "--input-ascii=approved", "--env=staging", f"--approval={cred_file}",
              f"--approval-key-set={keys}", script="byteor-actiongraph")
    assert (res.returncode, res.stdout) == (0, b"approved".hex() + "\n"), res.stderr
    [post] = http_target.recorder.posts()
    assert post.body == b"approved" and post.path == "/hook"
    assert post.headers["idempotency-key"] == "sha256:" + hashlib.sha256(b"approved").hexdigest()
    # the same credential does not carry over to another posture
    res = cli("run", str(spec_path), "--sp", "--input-ascii=again", "--env=prod", f"--approval={cred_file}",
              f"--approval-key-set={keys}", script="byteor-actiongraph")
    assert res.returncode == 4 and "approval environment check failed" in res.stderr
    assert len(http_target.recorder.posts()) == 1
