"""S3 through moto's server: 20 000 messages in objects under a prefix, read in key order, through
add_u8, written as position-named objects; a SIGKILL of the process group and a restart resume from
the checkpoint object and lose nothing; a put cut off from the store is retried under the same
name; a restarted sink continues the sequence instead of
overwriting; len32 objects round-trip; credentials in the URI and HOST:PORT are refused."""

from __future__ import annotations

import json
import struct
import sys
import time
from collections import Counter

import pytest

from broker_support import PACE_OFF, edge_spec, wait_out
from store_support import bumped, payloads

pytestmark = pytest.mark.services

N = 20_000
CAPACITY = 512


def _put_objects(bucket, prefix: str, first: int, count: int, per_object: int = 5000) -> None:  # type: ignore[no-untyped-def]
    for start in range(first, first + count, per_object):
        bucket.put_lines(f"{prefix}part-{start:06d}.txt", payloads(min(per_object, first + count - start), start))


def test_every_object_message_passes_add_u8_once(s3_bucket, edge, tmp_path, ring_dir) -> None:
    _put_objects(s3_bucket, "in/", 0, N)
    e = edge(edge_spec(tmp_path, name="store"), f"--ingress={s3_bucket.uri('in/')}",
             f"--egress={s3_bucket.uri('out/', batch='4000')}", f"--ring-path={ring_dir}", f"--max-messages={N}",
             "--json")
    assert e.wait() == 0, e.stderr
    summary = e.summary()
    assert summary["messages_out"] == N
    out = s3_bucket.read_lines("out/")
    assert len(out) == N and set(out) == bumped(payloads(N))
    keys = s3_bucket.keys("out/")
    assert all(k.startswith("out/") and k.endswith(".lines") for k in keys) and keys == sorted(keys)
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="in.byteor-checkpoint.json")["Body"].read()
    assert json.loads(body) == {"key": "in/part-015000.txt", "offset": 5000 * 7}


def test_sigkill_then_restart_resumes_from_the_checkpoint_and_loses_nothing(s3_bucket, edge, tmp_path,
                                                                           ring_dir) -> None:
    spec = edge_spec(tmp_path, name="store", pace_s=0.0001, capacity=CAPACITY)
    args = (f"--ingress={s3_bucket.uri('in/')}", f"--egress={s3_bucket.uri('out/')}", f"--ring-path={ring_dir}",
            "--json")
    _put_objects(s3_bucket, "in/", 0, N // 2)
    first = edge(spec, *args)
    wait_out(ring_dir, 2000)
    first.kill_group()
    second = edge(spec, *args, "--idle-exit=2", env=PACE_OFF)
    second.wait_for("ingress")
    _put_objects(s3_bucket, "in/", N // 2, N - N // 2)  # later keys, found by listing again
    assert second.wait() == 0, second.stderr
    out = s3_bucket.read_lines("out/")
    counts = Counter(out)
    assert set(counts) == bumped(payloads(N)), f"{len(bumped(payloads(N)) - set(counts))} lost"
    # what the killed run wrote after its last checkpoint comes again: at most the ring's capacity
    # plus the batch in hand
    assert len(out) - len(counts) <= 2 * CAPACITY
    assert len(out) < 2 * N, "the restart resumed from the checkpoint rather than from the first object"


def test_a_restarted_sink_continues_the_sequence_instead_of_overwriting(s3_bucket) -> None:
    from byteor.adapters import open_sink

    for run in range(2):
        sink = open_sink(s3_bucket.uri("seq/", batch="300"))
        sink.open()
        sink.write(payloads(500, run * 500))
        sink.flush()
        sink.close()
    assert s3_bucket.keys("seq/") == [f"seq/{n:020d}.lines" for n in (0, 300, 500, 800)]
    assert s3_bucket.read_lines("seq/") == payloads(1000)


def test_a_put_cut_off_from_the_store_is_retried_under_the_same_name(s3_bucket, edge, tcp_proxy, tmp_path,
                                                                      ring_dir) -> None:
    host_port = s3_bucket.endpoint.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    proxy = tcp_proxy((host, int(port)))
    egress = s3_bucket.uri("out/").replace(host_port, proxy.address)
    e = edge(edge_spec(tmp_path, name="store"), f"--ingress={s3_bucket.uri('in/')}", f"--egress={egress}",
             f"--ring-path={ring_dir}", "--idle-exit=3", "--json")
    e.wait_for("ingress")
    proxy.cut()
    _put_objects(s3_bucket, "in/", 0, 3000, per_object=1000)
    e.wait_for("connection lost")
    time.sleep(1.0)
    proxy.restore()
    e.wait_for("reconnected")
    assert e.wait() == 0, e.stderr
    out = s3_bucket.read_lines("out/")
    assert len(out) == 3000 and set(out) == bumped(payloads(3000))
    keys = s3_bucket.keys("out/")
    counts = [int(s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=k)["Metadata"]["byteor-count"])
              for k in keys]
    # each object starts where the one before ended: the retried put added no object of its own
    assert [int(k[len("out/"):-len(".lines")]) for k in keys] == [sum(counts[:i]) for i in range(len(keys))]


def test_len32_objects_round_trip(s3_bucket, edge, tmp_path, ring_dir) -> None:
    msgs = [b"a\nb", b"", b"\x00\x09\xfe", *payloads(997)]
    body = b"".join(struct.pack("<I", len(m)) + m for m in msgs)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="bin/one", Body=body)
    e = edge(edge_spec(tmp_path, name="store"), f"--ingress={s3_bucket.uri('bin/', format='len32')}",
             f"--egress={s3_bucket.uri('binout/', format='len32')}", f"--ring-path={ring_dir}",
             f"--max-messages={len(msgs)}", "--json")
    assert e.wait() == 0, e.stderr
    data = b"".join(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=k)["Body"].read()
                    for k in s3_bucket.keys("binout/"))
    got, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        got.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert got == [bytes((b + 1) & 0xFF for b in m) for m in msgs]


def test_a_truncated_len32_object_stops_the_run_after_the_messages_before_it(s3_bucket, edge, tmp_path,
                                                                             ring_dir) -> None:
    good = [*payloads(100)]
    body = b"".join(struct.pack("<I", len(m)) + m for m in good) + struct.pack("<I", 50) + b"short"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="bad/one", Body=body)
    e = edge(edge_spec(tmp_path, name="store"), f"--ingress={s3_bucket.uri('bad/', format='len32')}",
             f"--egress={s3_bucket.uri('badout/')}", f"--ring-path={ring_dir}", "--json")
    assert e.wait() == 2, e.stderr
    assert "'bad/one'" in e.stderr and f"at byte {len(body) - 9}" in e.stderr, e.stderr
    assert sorted(s3_bucket.read_lines("badout/")) == sorted(bumped(good))


@pytest.mark.parametrize(("uri", "error"), [
    ("s3://KEYID:hunter2secret@bkt/p", "takes no credentials in the URI"),
    ("s3://bkt:9000/p", "takes a bucket name, not HOST:PORT"),
    ("s3://bkt/p?format=hex", "?format= must be one of lines|len32"),
])
def test_bad_s3_uris_are_refused_in_one_line(cli, tmp_path, uri, error) -> None:
    r = cli("run", edge_spec(tmp_path, name="store"), f"--ingress={uri}", "--egress=-", script="byteor-edgeplane")
    assert r.returncode == 2, r.stderr
    assert error in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "hunter2secret" not in r.stderr + r.stdout


def test_without_boto3_the_error_names_the_extra(monkeypatch) -> None:
    from byteor import AdapterError
    from byteor.adapters import open_source

    monkeypatch.setitem(sys.modules, "boto3", None)  # what an install without the extra looks like
    source = open_source("s3://bkt/p/")
    with pytest.raises(AdapterError, match=r"pip install 'byteor\[s3\]'"):
        source.open()
