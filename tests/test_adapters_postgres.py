"""PostgreSQL: 20 000 queued rows through add_u8 into a COPY-written table, each once; a SIGKILL of
the process group and a restart lose nothing (the killed run's claimed rows come back, and the output
table takes their replay without a second row); two instances on one queue table process each row
exactly once between them; a missing table is one line naming the statement that creates it, and a
password in the URI shows nowhere."""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections import Counter

import pytest

from broker_support import PACE_OFF, edge_spec, wait_out
from conftest import SHM
from store_support import bumped, payloads

pytestmark = pytest.mark.services

N = 20_000


def test_every_queued_row_passes_add_u8_once(pg_tables, edge, tmp_path, ring_dir) -> None:
    # poll=60: rows queued after the source went idle arrive by NOTIFY, or not within the test's time
    e = edge(edge_spec(tmp_path, name="store"), f"--ingress={pg_tables.ingress(poll='60')}",
             f"--egress={pg_tables.egress()}", f"--ring-path={ring_dir}", f"--max-messages={N}", "--json")
    e.wait_for("ingress")
    time.sleep(0.5)  # the first look found the queue empty
    pg_tables.produce(payloads(N))
    assert e.wait(timeout=50) == 0, e.stderr
    summary = e.summary()
    assert summary["messages_out"] == N
    out = pg_tables.output()
    assert len(out) == N and set(out) == bumped(payloads(N))
    assert pg_tables.left() == 0, "every processed row is deleted"
    src = summary["sources"][0]
    assert src["deleted"] == N and src["requeued"] == 0


def test_a_run_stopped_by_max_messages_deletes_exactly_what_it_processed(pg_tables, edge, tmp_path,
                                                                         ring_dir) -> None:
    pg_tables.produce(payloads(300))
    spec = edge_spec(tmp_path, name="store")
    for run, take in enumerate((100, 200)):
        e = edge(spec, f"--ingress={pg_tables.ingress()}", "--egress=file:/dev/null", f"--ring-path={ring_dir}",
                 f"--max-messages={take}", "--json")
        assert e.wait() == 0, e.stderr
        # the claim the run stopped in gives back what it did not hand over, and only that
        assert e.summary()["sources"][0]["deleted"] == take
        assert pg_tables.left() == 200 * (1 - run)


def test_sigkill_then_restart_loses_nothing_and_writes_each_row_once(pg_tables, edge, tmp_path, ring_dir) -> None:
    spec = edge_spec(tmp_path, name="store", pace_s=0.0001)
    args = (f"--ingress={pg_tables.ingress()}", f"--egress={pg_tables.egress()}", f"--ring-path={ring_dir}", "--json")
    first = edge(spec, *args)
    first.wait_for("ingress")
    pg_tables.produce(payloads(N // 2))
    wait_out(ring_dir, 2000)
    first.kill_group()
    assert pg_tables.left() > 0, "the kill should land mid-run"
    second = edge(spec, *args, "--idle-exit=2", env=PACE_OFF)
    second.wait_for("ingress")
    pg_tables.produce(payloads(N - N // 2, start=N // 2))  # woken by NOTIFY
    assert second.wait() == 0, second.stderr
    out = pg_tables.output()
    # rows the killed run had written but not deleted come again; the unique id keeps one row each
    assert len(out) == N and set(out) == bumped(payloads(N))
    assert pg_tables.left() == 0


def test_a_cut_connection_is_retried_and_loses_nothing(pg_tables, edge, tcp_proxy, tmp_path, ring_dir) -> None:
    proxy = tcp_proxy(("127.0.0.1", 5432))
    ingress = pg_tables.ingress().replace("127.0.0.1:5432", proxy.address)
    e = edge(edge_spec(tmp_path, name="store", pace_s=0.0001), f"--ingress={ingress}", f"--egress={pg_tables.egress()}",
             f"--ring-path={ring_dir}", "--idle-exit=3", "--json", env={"EDGE_TEST_PACE_S": "0.0005"})
    e.wait_for("ingress")
    n = 6000
    pg_tables.produce(payloads(n // 2))
    wait_out(ring_dir, 1000)
    proxy.cut()  # the claims' transactions end with their connections: their rows are unlocked
    pg_tables.produce(payloads(n - n // 2, start=n // 2))
    time.sleep(1.5)
    proxy.restore()
    e.wait_for("reconnected")
    assert e.wait() == 0, e.stderr
    out = pg_tables.output()
    assert len(out) == n and set(out) == bumped(payloads(n))
    assert pg_tables.left() == 0
    assert e.summary()["sources"][0]["reconnects"] >= 1


def test_two_instances_on_one_queue_process_each_row_exactly_once(pg_tables, edge, tmp_path, request) -> None:
    spec = edge_spec(tmp_path, name="store", pace_s=0.0001)
    outs = [tmp_path / "a.out", tmp_path / "b.out"]
    rings = [SHM / f"t-pgscale-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    request.addfinalizer(lambda: [shutil.rmtree(r, ignore_errors=True) for r in rings])
    a, b = (edge(spec, f"--ingress={pg_tables.ingress()}", f"--egress=file:{outs[i]}?format=lines",
                 f"--ring-path={rings[i]}", "--idle-exit=3", "--output=lines", "--json") for i in range(2))
    a.wait_for("ingress")
    b.wait_for("ingress")
    pg_tables.produce(payloads(N))
    assert a.wait() == 0, a.stderr
    assert b.wait() == 0, b.stderr
    per_instance = [p.read_bytes().splitlines() if p.exists() else [] for p in outs]
    lines = per_instance[0] + per_instance[1]
    counts = Counter(lines)
    assert set(counts) == bumped(payloads(N)), f"{len(bumped(payloads(N)) - set(counts))} lost"
    assert len(lines) == N, f"{len(lines) - len(counts)} rows processed twice"
    assert all(per_instance), f"both instances should take rows: {[len(x) for x in per_instance]}"
    assert pg_tables.left() == 0


def test_a_replayed_batch_inserts_nothing_twice(pg_tables) -> None:
    from byteor.adapters import open_sink

    msgs = [*payloads(3000), b"same", b"same"]
    for attempt in range(2):
        sink = open_sink(pg_tables.egress(batch="1000"))
        sink.open()
        sink.write(msgs)
        sink.flush()
        sink.close()
        # identical payloads are one row: the id is the message's SHA-256
        assert sink.describe()["duplicates"] == (1 if attempt == 0 else len(msgs))
    assert sorted(pg_tables.output()) == sorted(set(msgs))


def test_a_missing_table_is_one_line_and_the_password_shows_nowhere(cli, tmp_path) -> None:
    secret = f"Pw{uuid.uuid4().hex}"
    missing = f"nope_{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    r = cli("run", edge_spec(tmp_path, name="store"), "--egress=-",
            f"--ingress=postgresql://root:{secret}@127.0.0.1:5432/test?table={missing}", script="byteor-edgeplane")
    assert r.returncode == 1, r.stderr
    assert f'CREATE TABLE "{missing}" (id bigserial PRIMARY KEY, payload bytea NOT NULL)' in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert secret not in r.stderr + r.stdout
    assert time.monotonic() - t0 < 30


def test_a_role_without_the_privileges_a_claim_needs_is_refused_at_start(pg_tables, cli, tmp_path) -> None:
    role = f"byteor_t_{uuid.uuid4().hex[:8]}"
    pg_tables.conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg_tables.conn.execute(f"GRANT SELECT ON {pg_tables.queue} TO {role}")  # no UPDATE: no row locks
        r = cli("run", edge_spec(tmp_path, name="store"), "--egress=-",
                f"--ingress=postgresql://{role}@127.0.0.1:5432/test?table={pg_tables.queue}", script="byteor-edgeplane")
        assert r.returncode == 1, r.stderr
        assert f"cannot use table {pg_tables.queue}: permission denied" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        pg_tables.conn.execute(f"REVOKE ALL ON {pg_tables.queue} FROM {role}")
        pg_tables.conn.execute(f"DROP ROLE {role}")


def test_a_bad_table_parameter_is_refused_before_connecting(cli, tmp_path) -> None:
    r = cli("run", edge_spec(tmp_path, name="store"), "--egress=-",
            "--ingress=postgresql://root@127.0.0.1:5432/test?table=a.b.c", script="byteor-edgeplane")
    assert r.returncode == 2 and "?table= must be TABLE or SCHEMA.TABLE" in r.stderr, r.stderr


def test_without_psycopg_the_error_names_the_extra(monkeypatch) -> None:
    from byteor import AdapterError
    from byteor.adapters import open_sink

    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra looks like
    sink = open_sink("postgresql://root@127.0.0.1:5432/test?table=t")
    with pytest.raises(AdapterError, match=r"pip install 'byteor\[postgres\]'"):
        sink.open()
