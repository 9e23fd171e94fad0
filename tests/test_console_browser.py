"""The operator console driven in a real headless Chromium against real multi-process pipelines: the
list, the topology with live lag, the approval counting down, DataGuard counters, dead letters, the
incident bundle download (read back by byteor), the replay preview, and refused writes. The run
writes docs/console-list.png and docs/console-pipeline.png."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from byteor import load_spec_file, spec_hash
from byteor.actions.deadletter import DeadLetterJournal, DeadLetterRecord
from byteor.artifacts import extract_bundle_tar, read_incident_bundle
from byteor.dataguard.codecs import encode_mapkv
from byteor.dataguard.envelope import encode
from console_support import BIN, DOCS, REGISTRY, Console, Feeder, wait_for
from obs_support import RunningPipeline
from policy_support import HttpTarget, new_signer, write_key_set

# Slow (20 ms a message) while the file `slow.flag` beside it exists, so the run lags while the test
# looks and drains at once when it ends.
SLOW_STAGE = """import os, time
FLAG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow.flag")

def slow(msg: bytes) -> bytes:
    if os.path.exists(FLAG):
        time.sleep(0.02)
    return msg
"""


def _orders_spec(tmp: Path, target: str) -> Path:
    (tmp / "console_slow.py").write_text(SLOW_STAGE)
    (tmp / "slow.flag").touch()
    (tmp / "dataguard").mkdir()
    (tmp / "dataguard" / "accounts.json").write_text(json.dumps({
        "registry_root": str(REGISTRY), "schema_id": 7, "msg_type": 1, "required_version": 2, "mode": "mapkv",
        "flow": "fused", "rules": ["email:mask=1:4:*"], "report": str(tmp / "accounts.report.kv")}))
    spec = tmp / "orders.kv"
    spec.write_text(
        "pipeline.name=orders\npipeline.target=SingleRing\npipeline.ring.capacity=65536\npipeline.ring.slot_bytes=256\n"
        "pipeline.stages.0.id=start\npipeline.stages.0.op=identity\n"
        "pipeline.stages.1.id=slow\npipeline.stages.1.op=resolver\npipeline.stages.1.resolver_key=py:console_slow:slow\n"
        "pipeline.stages.1.depends_on.0=0\n"
        "pipeline.stages.2.id=guard\npipeline.stages.2.op=resolver\npipeline.stages.2.resolver_key=dataguard:accounts\n"
        "pipeline.stages.2.depends_on.0=1\n"
        "pipeline.stages.3.id=notify\npipeline.stages.3.op=resolver\n"
        f"pipeline.stages.3.resolver_key=http_post:{target}/orders\npipeline.stages.3.depends_on.0=2\n")
    return spec


def _account(i: int) -> str:
    if i % 10 == 9:  # one in ten is not an envelope: DataGuard rejects it
        return "00" * 30
    payload = encode_mapkv({"user_id": i, "email": f"user{i}@example.com", "name": "Ada", "active": True})
    return encode(payload, codec_id=1, schema_id=7, msg_type=1, msg_version=2).hex()


# What a screen reader or a reader without colour relies on, found in the page as the browser built it.
A11Y_PROBE = """() => ({
  unlabelled: [...document.querySelectorAll('input, select, textarea')].filter(e => e.labels.length === 0)
              .map(e => e.id || e.name),
  tables_without_caption: [...document.querySelectorAll('table')].filter(t => !t.caption).length,
  head_cells_without_scope: [...document.querySelectorAll('thead th')].filter(th => th.scope !== 'col').length,
  missing_landmarks: ['header', 'nav', 'main', 'footer'].filter(s => !document.querySelector(s)),
  lang: document.documentElement.lang,
  states_without_words: [...document.querySelectorAll('[data-state]')].filter(e => !e.textContent.trim())
                        .map(e => e.id),
  // (Chromium itself puts an empty style attribute on password fields)
  inline: [...document.querySelectorAll('script:not([src]), style, [style]:not([style=""])')].map(e => e.outerHTML),
})"""
ACCESSIBLE = {"unlabelled": [], "tables_without_caption": 0, "head_cells_without_scope": 0, "missing_landmarks": [],
              "lang": "en", "states_without_words": [], "inline": []}


def _csp_errors(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def _number(text: str) -> int:
    m = re.search(r"lag ([\d,]+)", text)
    assert m, text
    return int(m.group(1).replace(",", ""))


def test_console_shows_a_live_pipeline_and_writes_only_with_the_token(
        http_target: HttpTarget, start_console: Callable[..., Console],
        fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]], browser: Any, tmp_path: Path) -> None:
    spec = _orders_spec(tmp_path, http_target.base)
    digest = spec_hash(load_spec_file(spec))
    signer = new_signer("ops-7")
    write_key_set(tmp_path / "signing_keys.json", signer)
    credential = signer.issue(digest, "staging", ["http_post"], ttl=timedelta(hours=2), issued_by="alice@example.com")
    (tmp_path / "approval.cred").write_text(credential)
    DeadLetterJournal(str(tmp_path / "dead-letter")).append(DeadLetterRecord(
        stage_key=f"http_post:{http_target.base}/orders", family="http_post", target=f"{http_target.base}/orders",
        idempotency_key="sha256:" + "ab" * 32, error="HTTP 503 after 3 attempts", decision="Allow",
        spec_hash=digest, input=b"order-0"))
    run, _feeder = fed_pipeline(spec, _account, 10, "--env=staging", "--input-format=hex",
                                f"--journal-dir={tmp_path / 'journals'}")
    token = secrets.token_hex(16)
    console = start_console(token=token)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    try:
        # -- the list: the pipeline, its identity and live rates ----------------------------------------------
        page.goto(console.url + "/")
        row = page.locator("tbody tr", has=page.locator("a", has_text="orders"))
        assert row.count() == 1
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == f"{digest[:15]}" and cells[1] == "SingleRing mp" and cells[2] == "staging"
        page.wait_for_function("() => /\\d/.test(document.getElementById('p0-in-rate').textContent)",
                               timeout=20000)
        page.screenshot(path=str(DOCS / "console-list.png"), full_page=True)
        assert page.evaluate(A11Y_PROBE) == ACCESSIBLE

        # -- the pipeline: one SVG node per stage, live lag on the slow stage -------------------------------------
        row.locator("a").click()
        page.wait_for_url(f"{console.url}/p/orders")
        nodes = page.locator("svg.topology g.node[data-kind=stage]")
        assert nodes.count() == 4
        assert [nodes.nth(i).get_attribute("data-name") for i in range(4)] == ["start", "slow", "guard", "notify"]
        slow = "svg.topology g.node[data-name=slow] text[id^=node-live-]"
        first = page.locator(slow).text_content()
        page.wait_for_function("([sel, before]) => document.querySelector(sel).textContent !== before",
                               arg=[slow, first], timeout=20000)
        second = page.locator(slow).text_content()
        assert first != second and re.fullmatch(r"lag [\d,]+ · ([\d,]+/s|–)( · \w+)?", second), (first, second)
        page.wait_for_function(f"() => /lag [1-9]/.test(document.querySelector('{slow}').textContent)",
                               timeout=20000)
        assert _number(page.locator(slow).text_content()) > 0  # the slow stage lags behind its input

        # -- policy: the approval in force, counting down; the decision; dead letters --------------------------
        remaining = page.locator("#approval-remaining")
        before = remaining.inner_text()
        assert re.fullmatch(r"expires in (1h \d\dm \d\ds|2h 00m 00s)", before), before  # a 2 h approval
        page.wait_for_function("(b) => document.getElementById('approval-remaining').textContent !== b",
                               arg=before, timeout=5000)
        policy = page.locator("section[aria-labelledby=policy-h]").inner_text()
        for text in ("ops-7", "alice@example.com", "http_post", "Allow", "1 record(s), 1 of which redrive would send"):
            assert text in policy, text
        assert credential not in page.content()
        # DataGuard counts what it checked, accepted and rejected
        page.wait_for_function("() => document.getElementById('dg0-rejected').textContent !== '0'", timeout=30000)
        assert int(page.locator("#dg0-seen").inner_text().replace(",", "")) > 0
        page.wait_for_function("() => /\\d/.test(document.getElementById('hdr-in-rate').textContent)", timeout=20000)
        page.screenshot(path=str(DOCS / "console-pipeline.png"), full_page=True)
        assert page.evaluate(A11Y_PROBE) == ACCESSIBLE
        assert "4 node(s)" in str(page.locator("svg.topology").get_attribute("aria-label"))

        # -- what redrive would send: read-only, nothing sent --------------------------------------------------
        posts_before = len(http_target.recorder.posts())
        page.click("text=What redrive would send")
        table = page.locator("table").inner_text()
        assert "would send" in table and "order-0" not in table
        assert not any(r.body == b"order-0" for r in http_target.recorder.posts()[posts_before:])
        page.go_back()

        # -- writes: refused without the token and with a wrong one ------------------------------------------
        refused = page.request.post(f"{console.url}/p/orders/bundle")
        assert refused.status == 401 and "needs the console token" in refused.text()
        assert page.request.post(f"{console.url}/p/orders/bundle",
                                 headers={"Authorization": "Bearer " + "x" * 32}).status == 403
        page.evaluate("() => document.getElementById('bundle-token').removeAttribute('required')")
        with page.expect_response(lambda r: r.url.endswith("/bundle")) as answer:
            page.click("form[action$='/bundle'] button")
        assert answer.value.status == 401
        assert "Refused: the token is needed" in page.locator("h1").inner_text()
        page.go_back()
        page.fill("#bundle-token", "wrong-" + token)
        with page.expect_response(lambda r: r.url.endswith("/bundle")) as answer:
            page.click("form[action$='/bundle'] button")
        assert answer.value.status == 403 and "wrong token" in page.locator("h1").inner_text()
        assert token not in page.content()
        assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())

        # -- the bundle: a download byteor reads back -------------------------------------------------------
        page.goto(f"{console.url}/p/orders")
        page.fill("#bundle-token", token)
        with page.expect_download() as download:
            page.click("form[action$='/bundle'] button")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name.startswith(f"orders-{digest[7:15]}-") and saved.name.endswith(".tar.gz")
        bundle = read_incident_bundle(extract_bundle_tar(saved, tmp_path / "extracted"))
        assert bundle.manifest is not None and bundle.manifest["spec_sha256"] == digest
        assert bundle.single_ring_snapshot is not None and bundle.environment.pid == run.proc.pid
        assert bundle.spec_validation.ok and bundle.dead_letter is not None
        assert list(bundle.journals) == ["ingress"]  # what the run took in (--journal-dir): replayable
        page.goto(f"{console.url}/p/orders")
        assert page.locator("#replay-lane option").all_inner_texts() == ["ingress"]
        assert page.locator("#replay-bundle option").all_inner_texts() == [saved.name]
        assert _csp_errors(messages) == []
    finally:
        page.close()
        (tmp_path / "slow.flag").unlink()  # the backlog drains at once
    # the session state names the approval in force and never the credential
    state = (run.ring_dir / "session_state.json").read_text()
    assert credential not in state and json.loads(state)["approval"]["kid"] == "ops-7"


def test_console_previews_a_replay_of_a_lanegraph_bundle(
        http_target: HttpTarget, start_console: Callable[..., Console],
        fed_pipeline: Callable[..., tuple[RunningPipeline, Feeder]], browser: Any, tmp_path: Path) -> None:
    spec = tmp_path / "ledger.kv"
    spec.write_text(
        "pipeline.name=ledger\npipeline.target=LaneGraph\n"
        "pipeline.lanes.0.name=in\npipeline.lanes.0.kind=events\npipeline.lanes.0.capacity=4096\n"
        "pipeline.lanes.1.name=rec\npipeline.lanes.1.kind=journal\npipeline.lanes.1.segment_bytes=1048576\n"
        "pipeline.lanes.2.name=out\npipeline.lanes.2.kind=events\n"
        "pipeline.endpoints.0.name=src\npipeline.endpoints.0.direction=ingress\npipeline.endpoints.0.lane=in\n"
        "pipeline.endpoints.1.name=dst\npipeline.endpoints.1.direction=egress\npipeline.endpoints.1.lane=out\n"
        "pipeline.roles.0.name=bump\npipeline.roles.0.kind=stage\npipeline.roles.0.inputs.0=in\n"
        "pipeline.roles.0.outputs.0=rec\npipeline.roles.0.op=add_u8\npipeline.roles.0.delta=1\n"
        "pipeline.roles.1.name=post\npipeline.roles.1.kind=stage\npipeline.roles.1.inputs.0=rec\n"
        "pipeline.roles.1.outputs.0=out\npipeline.roles.1.op=resolver\n"
        f"pipeline.roles.1.resolver_key=http_post:{http_target.base}/ledger\n")
    _run, feeder = fed_pipeline(spec, lambda i: f"entry-{i}", 5, f"--journal-dir={tmp_path / 'journals'}")
    wait_for(lambda: len(http_target.recorder.posts()) >= 10, "ten entries posted")
    token = secrets.token_hex(16)
    console = start_console(token=token)
    page = browser.new_page()
    try:
        page.goto(f"{console.url}/p/ledger")
        assert page.locator("svg.topology g.node[data-kind=role]").count() == 2
        assert page.locator("svg.topology g.node[data-kind=lane]").count() == 3
        page.fill("#bundle-token", token)
        with page.expect_download() as download:
            page.click("form[action$='/bundle'] button")
        name = download.value.suggested_filename
        page.goto(f"{console.url}/p/ledger")
        assert page.locator("#replay-bundle option").all_inner_texts() == [name]
        assert page.locator("#replay-lane option").all_inner_texts() == ["rec"]
        page.fill("#replay-last-n", "5")
        page.fill("#replay-token", token)
        page.click("form[action$='/replay'] button")
        assert page.locator("h1").inner_text() == "Replay preview of ledger"
        actions = page.locator("table").inner_text()
        assert "DryRunOnly" in actions and f"{http_target.base}/ledger" in actions
        audit = json.loads(page.locator("pre.audit").inner_text())
        assert audit["policy"]["mode"] == "dry_run" and len(audit["input"]["sample_sha256"]) == 5
        assert all(a["decision"] == "DryRunOnly" for a in audit["actions"]) and len(audit["actions"]) == 5
        # the preview sent nothing: the live pipeline posts each entry once, a replay would post one again
        bodies = [r.body for r in http_target.recorder.posts()]
        assert len(bodies) == len(set(bodies)) and all(b.startswith(b"fousz.") for b in bodies)
        # its audit file is gone; the bundle directory holds only the bundle
        assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [name]
        # and byteor's own replay reads the downloaded bundle as it is
        replay = subprocess.run([str(BIN / "byteor"), "replay", f"--bundle={tmp_path / 'bundles' / name}",
                                 "--journal-lane=rec", "--last-n=2", f"--out={tmp_path / 'cli-audit.json'}"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert replay.returncode == 0 and "DryRunOnly" in replay.stdout, replay.stderr
    finally:
        page.close()
        feeder.stop()
