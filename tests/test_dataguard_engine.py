"""The check / redact / fused engine over mixed streams, its counters, and the report KV v1."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from byteor import ArtifactError
from byteor.dataguard import codecs, envelope
from byteor.dataguard.engine import DROP, FORWARD_INPUT, DataGuard, GuardConfig
from byteor.dataguard.errors import RegistryError, RuleError
from byteor.dataguard.report import COUNTERS, parse_report_kv, render_report_kv, write_report
from byteor.dataguard.rules import RuleSet, parse_rules

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"
RULES = ["email:mask=1:4:*", "name:hash", "phone:truncate=4"]
GOOD = {"user_id": 42, "email": "jane.doe@example.com", "name": "Jürgen", "phone": "+49-30-123456",
        "active": True}


def env(obj: dict[str, Any], *, version: int = 2, schema_id: int = 7, msg_type: int = 1, codec: int = 1,
        flags: int = 0) -> bytes:
    payload = codecs.encode_mapkv(obj)
    raw = bytearray(envelope.encode(payload, codec_id=codec, schema_id=schema_id, msg_type=msg_type,
                                    msg_version=version))
    raw[4:6] = flags.to_bytes(2, "little")
    return bytes(raw)


def guard(flow: str = "fused", rules: list[str] | None = None, **kw: Any) -> DataGuard:
    return DataGuard(GuardConfig(str(REGISTRY), 7, 1, 2, mode=kw.pop("mode", "mapkv"), flow=flow,
                                 rules=RuleSet(parse_rules(RULES if rules is None else rules), environ={}),
                                 **kw))


def mixed_stream() -> list[tuple[str, bytes]]:
    """(expected outcome, message) pairs covering every rejection reason."""
    good3 = dict(GOOD, tier=3)
    return [
        ("accepted", env(GOOD)),
        ("accepted", env(good3, version=3)),
        ("accepted", env({k: v for k, v in GOOD.items() if k != "phone"})),     # optional field absent
        ("decode_err", b"USM2" + env(GOOD)[4:]),                                # bad magic
        ("decode_err", env(GOOD)[:20]),                                         # too short
        ("decode_err", env(GOOD, flags=4)),                                     # unknown flags
        ("decode_err", env(GOOD)[:-3]),                                         # payload_len past the end
        ("decode_err", envelope.encode(b"\x01\x05ab", codec_id=1, schema_id=7, msg_type=1,
                                       msg_version=2)),                          # truncated payload
        ("codec_mismatch", env(GOOD, codec=2)),
        ("codec_mismatch", env(GOOD, codec=9)),
        ("schema_missing", env(GOOD, schema_id=99)),                            # unknown schema id
        ("schema_missing", env(GOOD, msg_type=5)),                              # unknown message type
        ("schema_missing", env(GOOD, version=6)),                               # no v6 file
        ("schema_incompatible", env(GOOD, version=1)),                          # older than required
        ("schema_incompatible", env(GOOD, schema_id=9, msg_type=4)),            # registered, other tuple
        ("schema_incompatible", env(dict(GOOD, extra="x"))),                    # unknown field
        ("schema_incompatible", env(dict(GOOD, user_id="42"))),                 # wrong type
        ("schema_incompatible", env({k: v for k, v in GOOD.items() if k != "email"})),  # required missing
    ]


def test_fused_counters_add_up_over_a_mixed_stream() -> None:
    g = guard()
    stream = mixed_stream()
    outcomes = [g.process(msg) for _, msg in stream]
    expected: dict[str, int] = {}
    for reason, _ in stream:
        expected[reason] = expected.get(reason, 0) + 1
    c = g.counts
    assert c["seen"] == len(stream)
    assert c["accepted"] == expected["accepted"] == 3
    for reason in ("decode_err", "codec_mismatch", "schema_missing", "schema_incompatible"):
        assert c[reason] == expected[reason], reason
    assert c["seen"] == c["accepted"] + c["rejected"]
    assert c["rejected"] == sum(c[r] for r in ("decode_err", "codec_mismatch", "schema_missing",
                                               "schema_incompatible", "redact_overflow"))
    assert c["seen"] == c["out_drop"] + c["out_forward_input"] + c["out_forward_output"]
    assert c["out_drop"] == c["rejected"]
    assert c["out_forward_output"] == 3
    assert [o is not None for o in outcomes] == [r == "accepted" for r, _ in stream]
    assert g.rule_applied == [3, 3, 2]  # the third message has no phone


def test_fused_redacts_every_accepted_message() -> None:
    g = guard()
    out = g.process(env(GOOD))
    assert out is not None
    header, payload = envelope.decode(out)
    assert (header.schema_id, header.msg_type, header.msg_version, header.codec_id) == (7, 1, 2, 1)
    assert header.payload_len == len(payload)
    assert codecs.decode_mapkv(payload) == {
        "user_id": 42, "email": "j***************.com",
        "name": "sha256:" + hashlib.sha256("Jürgen".encode()).hexdigest(),
        "phone": "+49-", "active": True}


def test_check_flow_forwards_accepted_input_unchanged() -> None:
    g = guard("check")
    for reason, msg in mixed_stream():
        out = g.process(msg)
        assert out == (msg if reason == "accepted" else None)
    assert g.counts["out_forward_input"] == 3 and g.counts["out_forward_output"] == 0
    assert g.report().rules == []


def test_redact_flow_skips_field_checks_but_not_the_envelope_or_tuple() -> None:
    g = guard("redact")
    unknown_field = env(dict(GOOD, extra="kept"))
    out = g.process(unknown_field)
    assert out is not None
    assert codecs.decode_mapkv(envelope.decode(out)[1])["extra"] == "kept"
    assert g.process(env(GOOD, version=1)) is None  # older than required: still rejected
    assert g.process(env(GOOD, codec=2)) is None
    assert g.counts["accepted"] == 1 and g.counts["rejected"] == 2


def test_on_reject_forward_input_and_noop_redaction() -> None:
    g = guard(on_reject="forward_input", rules=["email:mask=10:10:*"])
    bad = env(GOOD, codec=2)
    assert g.process(bad) == bad
    msg = env(GOOD)  # mask keeps 20 characters of a 20-character email: no change
    assert g.process(msg) == msg
    c = g.counts
    assert c["out_forward_input"] == 2 and c["out_drop"] == 0 and c["redact_noop"] == 1
    assert g.rule_noop == [1]


def test_drop_and_replace_in_mapkv() -> None:
    g = guard(rules=["phone:drop", "active:replace_with=false", "user_id:replace_with=0"])
    out = g.process(env(GOOD))
    assert out is not None
    assert codecs.decode_mapkv(envelope.decode(out)[1]) == {
        "user_id": 0, "email": GOOD["email"], "name": GOOD["name"], "active": False}


def test_process_into_results_and_header_slack() -> None:
    g = guard()
    out = bytearray(512)
    long_header = bytearray(env(GOOD))
    long_header[7] = 28  # header_len 28: 4 extra header bytes are skipped, not carried over
    long_header[24:24] = b"\xde\xad\xbe\xef"
    n = g.process_into(bytes(long_header), out)
    assert n > 0
    assert envelope.decode(out[:n])[0].header_len == 24
    assert g.process_into(b"garbage", out) == DROP
    assert guard("check").process_into(env(GOOD), out) == FORWARD_INPUT


def test_redacted_output_that_does_not_fit_is_dropped() -> None:
    g = guard(rules=["name:replace_with=" + "x" * 400], capacity=256)
    assert g.process(env(GOOD)) is None
    c = g.counts
    assert c["redact_overflow"] == 1 and c["rejected"] == 1 and c["out_drop"] == 1 and c["accepted"] == 0


def test_row_mode_fused(tmp_path: Path) -> None:
    g = DataGuard(GuardConfig(str(REGISTRY), 9, 4, 1, mode="row", flow="fused",
                              rules=RuleSet(parse_rules(["name:mask=1:0:*", "raw:drop"]), environ={})))
    fields = [("id", "int"), ("name", "string"), ("ok", "bool"), ("raw", "bytes")]
    row = codecs.encode_row(fields, {"id": 5, "name": "Zoë", "ok": True, "raw": b"\x01\x02"})
    out = g.process(envelope.encode(row, codec_id=2, schema_id=9, msg_type=4, msg_version=1))
    assert out is not None
    assert codecs.decode_row(fields, envelope.decode(out)[1]) == {"id": 5, "name": "Z**", "ok": True,
                                                                  "raw": b""}
    wrong_tag = codecs.encode_row([("id", "int"), ("name", "int"), ("ok", "bool"), ("raw", "bytes")],
                                  {"id": 5, "name": 1, "ok": True, "raw": b""})
    assert g.process(envelope.encode(wrong_tag, codec_id=2, schema_id=9, msg_type=4, msg_version=1)) is None
    assert g.process(envelope.encode(row[:-1], codec_id=2, schema_id=9, msg_type=4, msg_version=1)) is None
    assert g.counts["schema_incompatible"] == 1 and g.counts["decode_err"] == 1


@pytest.mark.parametrize(("args", "fragment"), [
    ((99, 1, 1, "mapkv"), "no schema registered"),
    ((7, 1, 4, "mapkv"), "newest registered version is v3, older than --required-version=4"),
    ((7, 1, 2, "row"), "codec is 'mapkv' but the run's mode is 'row'"),
])
def test_registry_that_cannot_serve_the_tuple_fails_at_startup(args: tuple[Any, ...], fragment: str) -> None:
    schema_id, msg_type, version, mode = args
    with pytest.raises(RegistryError, match=fragment) as info:
        DataGuard(GuardConfig(str(REGISTRY), schema_id, msg_type, version, mode=mode))
    assert info.value.exit_code == 2


def test_startup_selects_lowest_version_at_or_above_required() -> None:
    assert DataGuard(GuardConfig(str(REGISTRY), 7, 1, 0)).selected.msg_version == 1
    assert DataGuard(GuardConfig(str(REGISTRY), 7, 1, 3)).selected.msg_version == 3


def test_registry_file_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="is not a directory"):
        DataGuard(GuardConfig(str(tmp_path / "nope"), 7, 1, 1))
    root = tmp_path / "reg"
    (root / "1" / "1").mkdir(parents=True)
    bad = root / "1" / "1" / "v1.json"
    for text, fragment in [
        ("{", "not valid JSON"),
        ('{"codec": "avro", "fields": []}', "`codec` must be"),
        ('{"codec": "mapkv", "fields": [{"name": "a", "type": "float"}]}', r"fields\[0\].type"),
        ('{"codec": "mapkv", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}',
         "duplicate field 'a'"),
        ('{"codec": "mapkv", "fields": [], "compat": 1}', "unknown key 'compat'"),
    ]:
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(RegistryError, match=fragment) as info:
            DataGuard(GuardConfig(str(root), 1, 1, 1))
        assert "v1.json" in str(info.value)


def test_rule_that_does_not_fit_the_schema_fails_at_startup() -> None:
    with pytest.raises(RuleError, match="'user_id:mask=1:1:\\*'"):
        guard(rules=["user_id:mask=1:1:*"])
    guard("check", rules=["user_id:mask=1:1:*"])  # check never redacts: rules are not applied


def test_rule_on_a_field_no_version_has_fails_at_startup() -> None:
    with pytest.raises(RuleError, match=r"rule 'emial:hash': no registered version >= 2 .* has a field 'emial'"):
        guard(rules=["email:mask=1:1:*", "emial:hash"])
    guard(rules=["tier:replace_with=0"])  # only v3 has tier: still a field of a version >= 2
    guard("check", rules=["emial:hash"])  # check never redacts


def test_malformed_later_version_is_incompatible_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    shutil.copytree(REGISTRY, root)
    (root / "7" / "1" / "v4.json").write_text("{broken", encoding="utf-8")
    g = DataGuard(GuardConfig(str(root), 7, 1, 2, rules=RuleSet([], environ={})))
    assert g.process(env(GOOD, version=4)) is None
    assert g.counts["schema_incompatible"] == 1


# ----------------------------------------------------------------------------- report


def test_report_round_trips_with_every_counter(tmp_path: Path) -> None:
    g = DataGuard(GuardConfig(str(REGISTRY), 7, 1, 2, flow="fused", cost_sample=2, on_reject="drop",
                              rules=RuleSet(parse_rules(RULES), hash_key_env="K", environ={"K": "hush"})))
    for _, msg in mixed_stream():
        g.process(msg)
    report = g.report()
    text = render_report_kv(report)
    assert "hush" not in text
    lines = text.splitlines()
    assert lines[:2] == ["report.v=1", "report.kind=dataguard"]
    assert f"schema.registry_root={REGISTRY.resolve()}" in lines
    assert "expected.codec_id=1" in lines
    assert "policy.hash_keyed=true" in lines and "policy.hash_key_env=K" in lines
    assert "policy.rules.1=name:hash" in lines
    for name in COUNTERS:
        assert f"counts.{name}={g.counts[name]}" in lines
    assert "counts.rule.2.applied=2" in lines
    assert "cost.sample_every=2" in lines and "cost.samples=9" in lines
    assert text.endswith("\n")
    path = tmp_path / "out" / "report.kv"
    write_report(path, report)
    back = parse_report_kv(path.read_text(encoding="utf-8"))
    assert back == report
    assert back.counts["seen"] == back.counts["accepted"] + back.counts["rejected"]


def test_report_parser_fails_closed_and_keeps_additive_keys() -> None:
    text = render_report_kv(guard().report())
    assert parse_report_kv(text + "future.key=1\n").extra == {"future.key": "1"}
    with pytest.raises(ArtifactError, match="newer"):
        parse_report_kv(text.replace("report.v=1", "report.v=2"))
    with pytest.raises(ArtifactError, match=r"counts\.seen"):
        parse_report_kv(text.replace("counts.seen=0\n", ""))
    with pytest.raises(ArtifactError, match=r"report\.kind"):
        parse_report_kv(text.replace("kind=dataguard", "kind=other"))
    with pytest.raises(ArtifactError, match="duplicate key"):
        parse_report_kv(text + "counts.seen=1\n")
    with pytest.raises(ArtifactError, match=r"counts\.rejected='x'"):
        parse_report_kv(text.replace("counts.rejected=0", "counts.rejected=x"))
