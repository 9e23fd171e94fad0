"""The byteor-dataguard verbs through the real console script."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from byteor.dataguard import codecs, envelope
from byteor.dataguard.report import parse_report_kv

CliRunner = Callable[..., subprocess.CompletedProcess[str]]

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"
DG = "byteor-dataguard"
ACCOUNT = {"user_id": 42, "email": "jane.doe@example.com", "name": "Jürgen", "active": True,
           "blob": {"hex": "00ff10"}}


def dg(cli: CliRunner, *args: str, **kw: object) -> tuple[int, str, str]:
    p = cli(*args, script=DG, **kw)
    return p.returncode, p.stdout, p.stderr


def encode_hex(cli: CliRunner, obj: object, *extra: str, version: int = 2) -> str:
    code, out, err = dg(cli, "encode", "--schema-id=7", "--msg-type", "1", f"--msg-version={version}",
                        "--mode=mapkv", f"--json={json.dumps(obj)}", *extra)
    assert code == 0, err
    return out.strip()


def test_help_lists_the_dataguard_verbs(cli: CliRunner) -> None:
    code, out, _ = dg(cli, "--help")
    assert code == 0
    for verb in ("encode", "decode", "check", "redact", "fused"):
        assert verb in out


def test_encode_is_byte_exact_and_decode_prints_header_and_payload(cli: CliRunner) -> None:
    # hand-written: count 1, key "a", tag 0, len 2, "hi"
    hex_ = encode_hex(cli, {"a": "hi"})
    assert hex_ == "55534d31" "0000" "01" "18" "0700000000000000" "01000000" "0200" "0700" "01016100026869"
    code, out, err = dg(cli, "decode", f"--input-hex={hex_}")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["payload"] == {"a": "hi"}
    assert doc["header"]["schema_id"] == 7 and doc["header"]["payload_len"] == 7
    assert doc["header"]["codec_id"] == 1 and doc["header"]["flags"] == 0


def test_encode_checks_against_the_registry(cli: CliRunner) -> None:
    hex_ = encode_hex(cli, ACCOUNT, f"--registry-root={REGISTRY}")
    _, out, _ = dg(cli, "decode", "--input-hex", hex_)
    assert json.loads(out)["payload"] == ACCOUNT
    for obj, fragment in [
        (dict(ACCOUNT, user_id="x"), "'user_id' must be int"),
        (dict(ACCOUNT, nope=1), "'nope' is not in"),
        ({"user_id": 1}, "lacks required field 'email'"),
    ]:
        code, _, err = dg(cli, "encode", "--schema-id=7", "--msg-type=1", "--msg-version=2", "--mode=mapkv",
                          f"--json={json.dumps(obj)}", f"--registry-root={REGISTRY}")
        assert code == 2 and fragment in err, err
    code, _, err = dg(cli, "encode", "--schema-id=7", "--msg-type=1", "--msg-version=9", "--mode=mapkv",
                      "--json={}", f"--registry-root={REGISTRY}")
    assert code == 2 and "7/1/v9" in err


def test_encode_row_needs_the_registry(cli: CliRunner) -> None:
    obj = {"id": -65, "name": "Zö", "ok": True, "raw": {"hex": "dead"}}
    code, out, err = dg(cli, "encode", "--schema-id=9", "--msg-type=4", "--msg-version=1", "--mode=row",
                        f"--json={json.dumps(obj)}", f"--registry-root={REGISTRY}")
    assert code == 0, err
    assert out.strip().endswith("01810100035ac3b6030102" "02dead")
    _, dec, _ = dg(cli, "decode", f"--input-hex={out.strip()}", f"--registry-root={REGISTRY}")
    assert json.loads(dec)["payload"] == obj
    _, dec, _ = dg(cli, "decode", f"--input-hex={out.strip()}")
    assert json.loads(dec)["payload"] == [-65, "Zö", True, {"hex": "dead"}]
    code, _, err = dg(cli, "encode", "--schema-id=9", "--msg-type=4", "--msg-version=1", "--mode=row",
                      f"--json={json.dumps(obj)}")
    assert code == 2 and "--registry-root" in err


def test_encode_usage_errors(cli: CliRunner) -> None:
    base = ["encode", "--schema-id=7", "--msg-type=1", "--msg-version=2", "--mode=mapkv"]
    for bad, fragment in [("--json={", "not valid JSON"), ("--json=[1]", "JSON object"),
                          ('--json={"a": 1.5}', "unsupported JSON value")]:
        code, _, err = dg(cli, *base, bad)
        assert code == 2 and fragment in err, err
        assert "Traceback" not in err
    code, _, err = dg(cli, "encode", "--schema-id=-1", "--msg-type=1", "--msg-version=2", "--mode=mapkv",
                      "--json={}")
    assert code == 2 and "--schema-id" in err
    code, _, err = dg(cli, "encode", "--schema-id=1", "--msg-type=1", "--msg-version=65536", "--mode=mapkv",
                      "--json={}")
    assert code == 2 and "--msg-version" in err


def test_decode_malformed_exits_1_naming_the_error(cli: CliRunner) -> None:
    good = encode_hex(cli, {"a": "hi"})
    cases = [
        ("55534d32" + good[8:], "BadMagic"),
        (good[:40], "BufferTooSmall"),
        (good[:8] + "0100" + good[12:], "UnknownFlags"),
        (good[:14] + "10" + good[16:], "BadHeaderLen"),
        (good[:44] + "ff00" + good[48:], "BadPayloadLen"),
        (good[:44] + "0400" + "01010104", "CodecError"),
    ]
    for hex_, name in cases:
        code, out, err = dg(cli, "decode", f"--input-hex={hex_}")
        assert code == 1, (name, err)
        assert err.startswith(f"byteor-dataguard decode: {name}: "), err
        assert out == "" and "Traceback" not in err
    code, _, err = dg(cli, "decode", "--input-hex=xyz")
    assert code == 2 and "not valid hex" in err


def _stream(cli: CliRunner) -> list[bytes]:
    good = bytes.fromhex(encode_hex(cli, ACCOUNT))
    old = bytes.fromhex(encode_hex(cli, ACCOUNT, version=1))
    other = envelope.encode(codecs.encode_mapkv({"a": 1}), codec_id=1, schema_id=55, msg_type=1,
                            msg_version=1)
    wrong_codec = bytearray(good)
    wrong_codec[6] = 2
    return [good, b"XXXX" + good[4:], bytes(wrong_codec), other, old, good]


def test_fused_on_a_hex_file(cli: CliRunner, tmp_path: Path) -> None:
    msgs = _stream(cli)
    src = tmp_path / "in.hex"
    src.write_text("".join(m.hex() + "\n" for m in msgs) + "\n", encoding="ascii")
    out, report = tmp_path / "out.hex", tmp_path / "report.kv"
    code, stdout, err = dg(cli, "fused", f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1",
                           "--required-version=2", "--mode=mapkv", "--rule=email:mask=1:4:*",
                           "--rule", "name:hash", f"--input={src}", "--input-format=hex", f"--output={out}",
                           f"--report={report}", "--cost-sample=1")
    assert code == 0, err
    assert "counts.seen" in stdout and "6" in stdout
    r = parse_report_kv(report.read_text(encoding="utf-8"))
    c = r.counts
    assert (c["seen"], c["accepted"], c["rejected"]) == (6, 2, 4)
    reasons = ("decode_err", "codec_mismatch", "schema_missing", "schema_incompatible")
    assert [c[k] for k in reasons] == [1, 1, 1, 1]
    assert (c["out_drop"], c["out_forward_output"]) == (4, 2)
    assert r.cost_sample_every == 1 and r.cost["samples"] == 6 and r.cost["bytes_in"] > 0
    assert r.rules == ["email:mask=1:4:*", "name:hash"]
    lines = out.read_text(encoding="ascii").splitlines()
    assert len(lines) == 2
    payload = codecs.decode_mapkv(envelope.decode(bytes.fromhex(lines[0]))[1])
    assert payload["email"] == "j***************.com"
    assert payload["name"] == "sha256:" + hashlib.sha256("Jürgen".encode()).hexdigest()


def test_check_len32_forward_input_and_json(cli: CliRunner, tmp_path: Path) -> None:
    msgs = _stream(cli)
    src = tmp_path / "in.bin"
    src.write_bytes(b"".join(struct.pack("<I", len(m)) + m for m in msgs))
    out, report = tmp_path / "out.bin", tmp_path / "r.kv"
    code, stdout, err = dg(cli, "check", f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1",
                           "--required-version=2", "--mode=mapkv", f"--input={src}", "--input-format=len32",
                           f"--output={out}", f"--report={report}", "--on-reject=forward_input", "--json")
    assert code == 0, err
    assert json.loads(stdout)["counts"]["accepted"] == 2
    assert out.read_bytes() == src.read_bytes()  # check + forward_input: every message, unchanged
    r = parse_report_kv(report.read_text(encoding="utf-8"))
    assert r.flow == "check" and r.on_reject == "forward_input" and r.counts["out_forward_input"] == 6


def test_redact_with_rules_file_and_keyed_hash(cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "in.hex"
    src.write_text(encode_hex(cli, dict(ACCOUNT, extra="x")) + "\n", encoding="ascii")
    rules = tmp_path / "rules.txt"
    rules.write_text("# pii\nemail:hash\nblob:truncate=1\n", encoding="utf-8")
    out, report = tmp_path / "out.hex", tmp_path / "r.kv"
    code, _, err = dg(cli, "redact", f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1",
                      "--required-version=2", "--mode=mapkv", f"--rules-file={rules}", f"--input={src}",
                      f"--output={out}", f"--report={report}", env={"BYTEOR_DATAGUARD_HASH_KEY": "pepper-77"})
    assert code == 0, err
    text = report.read_text(encoding="utf-8")
    assert "pepper-77" not in text and "policy.hash_keyed=true" in text
    assert "policy.hash_key_env=BYTEOR_DATAGUARD_HASH_KEY" in text
    payload = codecs.decode_mapkv(envelope.decode(bytes.fromhex(out.read_text().strip()))[1])
    assert payload["blob"] == b"\x00" and payload["extra"] == "x"
    assert payload["email"] != "sha256:" + hashlib.sha256(b"jane.doe@example.com").hexdigest()
    code, _, err = dg(cli, "redact", f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1",
                      "--required-version=2", "--mode=mapkv", "--rule=email:hash", "--hash-key-env=NOPE_KEY",
                      f"--input={src}", f"--report={report}")
    assert code == 2 and "NOPE_KEY is not set" in err


def test_startup_and_usage_failures(cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "in.hex"
    src.write_text(encode_hex(cli, ACCOUNT) + "\n", encoding="ascii")
    base = [f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1", "--mode=mapkv",
            f"--report={tmp_path / 'r.kv'}"]
    cases = [
        (["check", *base, "--required-version=9", f"--input={src}"], 2, "older than --required-version=9"),
        (["check", f"--registry-root={REGISTRY}", "--schema-id=8", "--msg-type=1", "--mode=mapkv",
          "--required-version=1", f"--input={src}", f"--report={tmp_path / 'r.kv'}"], 2,
         "no schema registered"),
        (["fused", *base, "--required-version=2", "--rule=email:mask=1:2", f"--input={src}"], 2,
         "rule 'email:mask=1:2'"),
        (["fused", *base, "--required-version=2", "--rule=user_id:hash", f"--input={src}"], 2,
         "rule 'user_id:hash'"),
        (["fused", *base, "--required-version=2", f"--input={tmp_path / 'missing.hex'}"], 2,
         "does not exist"),
        (["fused", *base, "--required-version=2", f"--rules-file={tmp_path / 'none.txt'}",
          f"--input={src}"], 2, "cannot read"),
    ]
    for args, code_expected, fragment in cases:
        code, _, err = dg(cli, *args)
        assert code == code_expected, (args, err)
        assert fragment in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "r.kv").exists()
    bad = tmp_path / "bad.hex"
    bad.write_text("55534d31\nzz\n", encoding="ascii")
    code, _, err = dg(cli, "check", *base, "--required-version=2", f"--input={bad}")
    assert code == 2 and "line 2 is not hex" in err
    trunc = tmp_path / "t.bin"
    trunc.write_bytes(struct.pack("<I", 10) + b"abc")
    code, _, err = dg(cli, "check", *base, "--required-version=2", f"--input={trunc}", "--input-format=len32")
    assert code == 2 and "says 10 bytes, 3 remain" in err


def test_rule_numbers_beyond_the_bound_are_usage_errors_not_a_crash(cli: CliRunner, tmp_path: Path) -> None:
    """The mask that overflowed the C kernel (exit 139), one at 2**63-1 whose output differed from the
    Python engine, and one at 2**63 (a traceback) are all refused at parse time with exit 2."""
    src = tmp_path / "in.hex"
    src.write_text(encode_hex(cli, ACCOUNT) + "\n", encoding="ascii")
    base = [f"--registry-root={REGISTRY}", "--schema-id=7", "--msg-type=1", "--mode=mapkv",
            "--required-version=2", f"--input={src}", f"--output={tmp_path / 'o.hex'}",
            f"--report={tmp_path / 'r.kv'}"]
    for rule in ("blob:mask=4611686018427387904:4611686018427387904:#", f"name:mask={2**63 - 1}:1:#",
                 f"name:truncate={2**63}", "name:mask=1:1048577:*", "email:truncate=" + "9" * 5000):
        code, _, err = dg(cli, "redact", *base, f"--rule={rule}")
        assert code == 2, (rule, err)
        assert "is larger than 1048576" in err and "Traceback" not in err
    code, _, err = dg(cli, "redact", *base, "--rule=blob:mask=1048576:1048576:#")
    assert code == 0, err  # at the bound: accepted, and a no-op on every value
