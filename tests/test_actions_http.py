"""http_post stages against a real local HTTP server: dev posts, staging dry-run posts nothing,
the idempotency header, keep-alive, retries (503, 429, transport), no retry on 400, allowlist traps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from byteor import ActionFailed, PolicyRefused, load_spec_file, spec_hash
from byteor._stage import ResolvedStage, StageContext
from byteor.actions import DeadLetterJournal, resolve_action, url_admitted
from byteor.actions.http_post import allowlist_from_env, parse_target_url
from byteor.policy.gate import RunGate, gate_run
from policy_support import HttpTarget, write_lanegraph_spec, write_spec

Resolve = Callable[[str, StageContext], ResolvedStage]


def _gate(spec_path: Path, posture: str = "dev", *, dry_run: bool = False,
          recorder: Any = None) -> RunGate:
    spec = load_spec_file(spec_path)
    return gate_run(spec, spec_path=str(spec_path), spec_hash=spec_hash(spec), posture=posture,
                    dry_run=dry_run, approval=None, key_set=None, recorder=recorder)


@pytest.fixture
def resolve() -> Iterator[Resolve]:
    """resolve_action, closing every resolved stage (its pooled client) at teardown."""
    made: list[ResolvedStage] = []

    def run(key: str, ctx: StageContext) -> ResolvedStage:
        stage = resolve_action(key, ctx)
        made.append(stage)
        return stage

    yield run
    for stage in made:
        if stage.close is not None:
            stage.close()


def _send(stage_fn: Any, payload: bytes, slot_bytes: int = 256) -> tuple[int, bytes]:
    slot = bytearray(slot_bytes)
    slot[: len(payload)] = payload
    n = stage_fn(memoryview(slot), len(payload))
    return n, bytes(slot[:n])


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BYTEOR_HTTP_POST_ALLOWLIST", "BYTEOR_EXEC_ALLOWLIST", "BYTEOR_POLICY_FILE",
                 "BYTEOR_API_BASE_URL", "BYTEOR_AGENT_ID", "BYTEOR_AGENT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BYTEOR_ACTION_RETRY_BASE_MS", "1")
    monkeypatch.setenv("BYTEOR_HTTP_POST_TIMEOUT", "5")


def test_dev_without_approval_posts_with_idempotency_key(resolve: Resolve,
                                                         http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/hook"
    gate = _gate(write_spec(tmp_path, key))
    assert [(d.decision, d.family) for d in gate.decisions] == [("Allow", "http_post")]
    stage = resolve(key, gate.context)
    assert (stage.modifies, stage.side_effect, stage.family) == (False, True, "http_post")
    for body in (b"hello", b"\x00\xffbinary", b"hello"):
        n, forwarded = _send(stage.fn, body)
        assert (n, forwarded) == (len(body), body)  # forwarded unchanged
    posts = http_target.recorder.posts()
    assert [p.body for p in posts] == [b"hello", b"\x00\xffbinary", b"hello"]
    assert all(p.path == "/hook" for p in posts)
    for p in posts:
        assert p.headers["idempotency-key"] == "sha256:" + hashlib.sha256(p.body).hexdigest()
    assert posts[0].headers["idempotency-key"] == posts[2].headers["idempotency-key"]
    assert len({p.peer for p in posts}) == 1  # one pooled keep-alive connection


def test_lanegraph_stage_role_is_gated(http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/lg"
    gate = _gate(write_lanegraph_spec(tmp_path, key))
    assert [(d.index, d.name, d.decision) for d in gate.decisions] == [(0, "poster", "Allow")]
    with pytest.raises(PolicyRefused, match="stage 0 'poster'"):
        _gate(write_lanegraph_spec(tmp_path, key), "prod")


def test_staging_without_approval_refuses_and_dry_run_posts_nothing(resolve: Resolve, http_target: HttpTarget,
                                                                     tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/hook"
    spec_path = write_spec(tmp_path, key, "exec:/bin/true")
    with pytest.raises(PolicyRefused) as info:
        _gate(spec_path, "staging")
    lines = str(info.value).splitlines()
    assert "stage 1 'act1'" in lines[1] and "RequireApproval" in lines[1]
    assert "stage 2 'act2'" in lines[2] and "Deny" in lines[2] and "BYTEOR_EXEC_ALLOWLIST" in lines[2]
    http_only = write_spec(tmp_path, key, filename="http.kv")
    seen: list[dict[str, Any]] = []
    gate = _gate(http_only, "staging", dry_run=True, recorder=seen.append)
    assert [d.decision for d in gate.decisions] == ["DryRunOnly"]
    stage = resolve(key, gate.context)
    assert _send(stage.fn, b"payload") == (7, b"payload")
    assert http_target.recorder.posts() == []
    assert seen == [{"action": "http_post", "stage": key, "target": f"{http_target.base}/hook",
                     "idempotency_key": "sha256:" + hashlib.sha256(b"payload").hexdigest(),
                     "decision": "DryRunOnly", "bytes": 7}]


def test_resolve_refuses_without_an_allowing_decision(http_target: HttpTarget) -> None:
    key = f"http_post:{http_target.base}/hook"
    with pytest.raises(PolicyRefused, match="missing"):
        resolve_action(key, StageContext(posture="prod"))
    with pytest.raises(PolicyRefused, match="RequireApproval"):
        resolve_action(key, StageContext(posture="prod", decisions={key: "RequireApproval"}))


def test_retries_503_twice_then_one_delivery(resolve: Resolve,
                                             http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/r"
    http_target.recorder.statuses = [503, 503]
    stage = resolve(key, _gate(write_spec(tmp_path, key)).context)
    assert _send(stage.fn, b"once")[0] == 4
    posts = http_target.recorder.posts()
    assert len(posts) == 3 and {p.body for p in posts} == {b"once"}
    assert len({p.headers["idempotency-key"] for p in posts}) == 1  # safe to repeat
    assert not (tmp_path / "dead-letter").exists()


def test_429_is_retried(resolve: Resolve, http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/r"
    http_target.recorder.statuses = [429]
    stage = resolve(key, _gate(write_spec(tmp_path, key)).context)
    _send(stage.fn, b"x")
    assert len(http_target.recorder.posts()) == 2


def test_no_retry_on_400_and_dead_letter(resolve: Resolve, http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/bad"
    http_target.recorder.statuses = [400]
    spec_path = write_spec(tmp_path, key)
    stage = resolve(key, _gate(spec_path).context)
    with pytest.raises(ActionFailed, match="HTTP 400") as info:
        _send(stage.fn, b"rejected")
    assert info.value.exit_code == 1
    assert len(http_target.recorder.posts()) == 1
    records = DeadLetterJournal(str(tmp_path / "dead-letter")).records()
    assert len(records) == 1
    rec = records[0]
    assert (rec.stage_key, rec.family, rec.input, rec.decision) == (key, "http_post", b"rejected", "Allow")
    assert rec.idempotency_key == "sha256:" + hashlib.sha256(b"rejected").hexdigest()
    assert rec.spec_hash == spec_hash(load_spec_file(spec_path)) and "HTTP 400" in rec.error
    assert rec.id in str(info.value)


def test_transport_errors_retry_then_fail(resolve: Resolve,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEOR_ACTION_MAX_RETRIES", "2")
    from policy_support import start_server

    dead = start_server()
    base = dead.base
    dead.stop()  # nothing listens there any more: connection refused
    key = f"http_post:{base}/gone"
    stage = resolve(key, _gate(write_spec(tmp_path, key)).context)
    with pytest.raises(ActionFailed, match=r"ConnectError.*after 3 attempts"):
        _send(stage.fn, b"x")


@pytest.mark.parametrize(("allow", "url", "admitted"), [
    ("https://a.example.com", "https://a.example.com/x", True),
    ("https://a.example.com", "https://A.Example.COM/x", True),
    ("https://a.example.com", "https://a.example.com:443/x", True),
    ("https://a.example.com", "https://a.example.com.evil.net/x", False),
    ("https://a.example.com", "https://evil.net/a.example.com", False),
    ("https://a.example.com", "https://a.example.com:8443/x", False),
    ("https://a.example.com", "http://a.example.com/x", False),
    ("https://a.example.com/api", "https://a.example.com/api", True),
    ("https://a.example.com/api", "https://a.example.com/api/v1", True),
    ("https://a.example.com/api/", "https://a.example.com/api/v1", True),
    ("https://a.example.com/api", "https://a.example.com/apix", False),
    ("https://a.example.com/api", "https://a.example.com/", False),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8081/", False),
    ("https://a.example.com,https://b.example.com", "https://b.example.com/", True),
])
def test_allowlist_matches_the_parsed_url(allow: str, url: str, admitted: bool) -> None:
    allowlist = allowlist_from_env({"BYTEOR_HTTP_POST_ALLOWLIST": allow})
    assert url_admitted(parse_target_url(url), allowlist) is admitted


@pytest.mark.parametrize("url", [
    "https://a.example.com@evil.net/",
    "https://user:pw@a.example.com/",
    "https://a.example.com\\@evil.net/",
    "https://a.example.com/api/../admin",
    "https://a.example.com/api/%2e%2e/admin",
    "ftp://a.example.com/",
    "https:///nohost",
    "https://a.example.com:99999/",
    "https://a.example.com/ x",
])
def test_tricky_urls_are_refused(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEOR_HTTP_POST_ALLOWLIST", "https://a.example.com")
    with pytest.raises(ValueError):
        parse_target_url(url)
    if " " in url:
        return  # a spec value may hold a space, but our spec writer splits lines only on \n
    with pytest.raises(PolicyRefused, match="Deny"):
        _gate(write_spec(tmp_path, f"http_post:{url}"))


def test_allowlist_denies_in_the_gate(http_target: HttpTarget, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEOR_HTTP_POST_ALLOWLIST", http_target.base + "/ok")
    good = f"http_post:{http_target.base}/ok/1"
    bad = f"http_post:{http_target.base}/okay"
    with pytest.raises(PolicyRefused) as info:
        _gate(write_spec(tmp_path, good, bad))
    msg = str(info.value)
    assert "act2" in msg and "not admitted by BYTEOR_HTTP_POST_ALLOWLIST" in msg and "act1" not in msg
    # the allowlist wins over --dry-run too: a dry run shows what the live run would refuse
    with pytest.raises(PolicyRefused):
        _gate(write_spec(tmp_path, bad, filename="b.kv"), dry_run=True)
    monkeypatch.setenv("BYTEOR_HTTP_POST_ALLOWLIST", "not a url")
    with pytest.raises(Exception, match="BYTEOR_HTTP_POST_ALLOWLIST entry 1") as err:
        _gate(write_spec(tmp_path, good, filename="c.kv"))
    assert getattr(err.value, "exit_code", None) == 2


def test_query_strings_never_reach_errors(resolve: Resolve, http_target: HttpTarget, tmp_path: Path) -> None:
    key = f"http_post:{http_target.base}/q?token=s3cret"
    http_target.recorder.statuses = [401]
    stage = resolve(key, _gate(write_spec(tmp_path, key)).context)
    with pytest.raises(ActionFailed) as info:
        _send(stage.fn, b"x")
    assert "s3cret" not in str(info.value) and "?<redacted>" in str(info.value)


def test_through_byteor_run_sp(http_target: HttpTarget, tmp_path: Path, cli) -> None:
    pytest.importorskip("byteor.cli.run", reason="the runtime's run verb is not in this build")
    key = f"http_post:{http_target.base}/sp"
    spec_path = write_spec(tmp_path, key)
    res = cli("run", "--sp", str(spec_path), "--input-ascii=hi", "--env=dev")
    assert (res.returncode, res.stdout) == (0, "6869\n"), res.stderr
    [post] = http_target.recorder.posts()
    assert post.body == b"hi"
    assert post.headers["idempotency-key"] == "sha256:" + hashlib.sha256(b"hi").hexdigest()
    res = cli("run", "--sp", str(spec_path), "--input-ascii=hi", "--env=staging")
    assert res.returncode == 4 and "stage 1 'act1'" in res.stderr and "RequireApproval" in res.stderr
    res = cli("run", "--sp", str(spec_path), "--input-ascii=hi", "--env=staging", "--dry-run")
    assert (res.returncode, res.stdout) == (0, "6869\n"), res.stderr
    assert len(http_target.recorder.posts()) == 1  # the dry run posted nothing
    http_target.recorder.statuses = [400]
    res = cli("run", "--sp", str(spec_path), "--input-ascii=lost?", "--env=dev")
    assert res.returncode == 1 and "HTTP 400" in res.stderr, res.stderr
    [rec] = DeadLetterJournal(str(tmp_path / "dead-letter")).records()
    assert rec.input == b"lost?"


@pytest.mark.parametrize("path", ["/api/..%2fadmin", "/api/%2e%2e%2fadmin", "/api/%2E%2e/admin", "/api/.%2e/admin",
                                  "/api/%2e/x", "/api%2F..%2Fadmin", "/api/x%5c..%5cadmin", "/api/x%00"])
def test_encoded_dot_segments_and_separators_are_refused(path: str, http_target: HttpTarget, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`..%2f` and `%2e%2e%2f` passed a path-prefix allowlist and were sent as they were."""
    monkeypatch.setenv("BYTEOR_HTTP_POST_ALLOWLIST", f"{http_target.base}/api")
    url = f"{http_target.base}{path}"
    with pytest.raises(ValueError, match=r"encoded separator|\. or \.\. segments"):
        parse_target_url(url)
    with pytest.raises(PolicyRefused, match="Deny"):
        _gate(write_spec(tmp_path, f"http_post:{url}"))
    assert http_target.recorder.requests == []


def test_paths_are_normalised_before_they_are_compared() -> None:
    allow = allowlist_from_env({"BYTEOR_HTTP_POST_ALLOWLIST": "https://a.example.com/api"})
    assert url_admitted(parse_target_url("https://a.example.com/%61pi/v1"), allow)  # %61 is "a"
    assert not url_admitted(parse_target_url("https://a.example.com/ap%69x"), allow)  # /apix
    assert parse_target_url("https://a.example.com/a%7eb%2a").path == "/a~b%2A"


@pytest.mark.parametrize("value", ["", " ", ",", " , ,", ",,,"])
def test_an_allowlist_with_no_valid_entry_is_a_usage_error(value: str, tmp_path: Path, cli) -> None:
    """An allowlist of only spaces or commas used to admit everything."""
    with pytest.raises(ValueError, match="is set but names no URL") as info:
        allowlist_from_env({"BYTEOR_HTTP_POST_ALLOWLIST": value})
    assert getattr(info.value, "exit_code", None) == 2
    spec_path = write_spec(tmp_path, "http_post:https://evil.example/x")
    res = cli("run", str(spec_path), "--sp", "--input-ascii=x", "--dry-run", script="byteor-actiongraph",
              env={"BYTEOR_HTTP_POST_ALLOWLIST": value})
    assert res.returncode == 2 and "BYTEOR_HTTP_POST_ALLOWLIST is set but names no URL" in res.stderr
