"""Redaction rules: parsing (errors name the rule), every rule on strings, bytes, unicode and empty
values, rules files, the hash key from the environment, and redact_json_artifact."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from byteor.dataguard.errors import RuleError
from byteor.dataguard.rules import (
    DROPPED,
    RuleSet,
    apply_rule,
    load_rules_file,
    parse_rule,
    redact_json_artifact,
)

APPLIED, NOOP = 1, 2


def run(rule: str, value: Any, key: bytes | None = None) -> tuple[Any, int]:
    return apply_rule(parse_rule(rule), value, key)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("value", "expected"), [
    ("jane.doe@example.com", ("j***************.com", APPLIED)),
    ("Jürgen Weiß", ("J******Weiß", APPLIED)),          # characters, not bytes
    ("abcde", ("abcde", NOOP)),                         # exactly P+S characters: left as it is
    ("", ("", NOOP)),
    (b"\x00\x01\x02\x03\x04\x05\x06", (b"\x00**\x03\x04\x05\x06", APPLIED)),  # bytes keep P/S bytes
    (b"", (b"", NOOP)),
])
def test_mask(value: Any, expected: tuple[Any, int]) -> None:
    assert run("f:mask=1:4:*", value) == expected


def test_mask_edge_arguments() -> None:
    assert run("f:mask=0:0:#", "héllo") == ("#####", APPLIED)
    assert run("f:mask=0:0:·", "ab") == ("··", APPLIED)
    assert run("f:mask=2:0::", "abcd") == ("ab::", APPLIED)  # the mask character may be ':'
    assert run("f:mask=0:0:#", b"ab") == (b"##", APPLIED)


@pytest.mark.parametrize(("value", "expected"), [
    ("hello world", ("hello", APPLIED)),
    ("日本語テキスト", ("日本語テキ", APPLIED)),
    ("hey", ("hey", NOOP)),
    ("", ("", NOOP)),
    (b"\xff\xfe\xfd\xfc\xfb\xfa", (b"\xff\xfe\xfd\xfc\xfb", APPLIED)),
    (b"", (b"", NOOP)),
])
def test_truncate(value: Any, expected: tuple[Any, int]) -> None:
    assert run("f:truncate=5", value) == expected


def test_truncate_zero_empties() -> None:
    assert run("f:truncate=0", "secret") == ("", APPLIED)
    assert run("f:truncate=0", b"x") == (b"", APPLIED)


@pytest.mark.parametrize("value", ["jane@example.com", "Zoë ☃", "", b"\x00\xff", b""])
def test_hash_is_sha256_of_the_utf8_or_the_bytes(value: Any) -> None:
    data = value if isinstance(value, bytes) else value.encode("utf-8")
    out, status = run("f:hash", value)
    assert status == APPLIED
    assert out == (sha(data).encode("ascii") if isinstance(value, bytes) else sha(data))


def test_hash_keyed_is_hmac_sha256() -> None:
    key = b"s3cret-key"
    out, _ = run("f:hash", "jane@example.com", key)
    assert out == "sha256:" + hmac.new(key, b"jane@example.com", hashlib.sha256).hexdigest()
    assert out != run("f:hash", "jane@example.com")[0]


@pytest.mark.parametrize(("value", "expected"), [
    ("jane", ("REDACTED", APPLIED)),
    ("", ("REDACTED", APPLIED)),
    ("REDACTED", ("REDACTED", NOOP)),
    ("ünï", ("REDACTED", APPLIED)),
    (b"\x01", (b"REDACTED", APPLIED)),
    (b"", (b"REDACTED", APPLIED)),
])
def test_replace_with(value: Any, expected: tuple[Any, int]) -> None:
    assert run("f:replace_with=REDACTED", value) == expected


def test_replace_with_keeps_int_and_bool_types() -> None:
    assert run("f:replace_with=0", 42) == (0, APPLIED)
    assert run("f:replace_with=false", True) == (False, APPLIED)
    assert run("f:replace_with=", "x") == ("", APPLIED)
    assert run("f:replace_with=a=b:c", "x") == ("a=b:c", APPLIED)  # everything after the first '='


@pytest.mark.parametrize("value", ["x", "", "ü", b"", b"\x00", 7, True])
def test_drop(value: Any) -> None:
    assert run("f:drop", value) == (DROPPED, APPLIED)


def test_ints_under_text_rules_use_their_text() -> None:
    assert run("f:hash", 42) == (sha(b"42"), APPLIED)
    assert run("f:truncate=1", 42) == ("4", APPLIED)
    assert run("f:mask=0:0:*", True) == ("****", APPLIED)


@pytest.mark.parametrize(("text", "fragment"), [
    ("email", "expected FIELD:ACTION"),
    (":drop", "expected FIELD:ACTION"),
    ("email:explode", "unknown action 'explode'"),
    ("email:drop=1", "drop takes no argument"),
    ("email:hash=md5", "hash takes no argument"),
    ("email:replace_with", "replace_with needs =VALUE"),
    ("email:mask", "mask needs =P:S:C"),
    ("email:mask=1:2", "mask needs =P:S:C"),
    ("email:mask=a:2:*", "mask needs =P:S:C"),
    ("email:mask=-1:2:*", "mask needs =P:S:C"),
    ("email:mask=1:2:**", "exactly one character"),
    ("email:mask=1:2:", "exactly one character"),
    ("email:truncate", "truncate needs =N"),
    ("email:truncate=-3", "truncate needs =N"),
    ("email:truncate=x", "truncate needs =N"),
])
def test_rule_parse_errors_name_the_rule(text: str, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(text)
    assert repr(text) in str(info.value)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_rules_check_against_schema_types() -> None:
    rs = RuleSet([parse_rule("age:mask=1:1:*"), parse_rule("email:hash")])
    assert rs.check_schema_types({"email": "string", "age": "string"}, "s") is None
    why = rs.check_schema_types({"email": "string", "age": "int"}, "schema x")
    assert why is not None and "'age:mask=1:1:*'" in why and "int" in why
    assert RuleSet([parse_rule("n:replace_with=abc")]).check_schema_types({"n": "int"}, "s")
    assert RuleSet([parse_rule("n:replace_with=-5")]).check_schema_types({"n": "int"}, "s") is None
    assert RuleSet([parse_rule("b:replace_with=yes")]).check_schema_types({"b": "bool"}, "s")
    assert RuleSet([parse_rule("r:mask=0:0:é")]).check_schema_types({"r": "bytes"}, "s")


def test_rules_file_text_and_json(tmp_path: Path) -> None:
    text = tmp_path / "rules.txt"
    text.write_text("# PII policy\n\nemail:mask=1:4:*\n  phone:hash\r\n", encoding="utf-8")
    assert [r.text for r in load_rules_file(text)] == ["email:mask=1:4:*", "phone:hash"]
    js = tmp_path / "rules.json"
    js.write_text('{"rules": ["a:drop", "b:truncate=3"]}', encoding="utf-8")
    assert [r.action for r in load_rules_file(js)] == ["drop", "truncate"]
    js.write_text('["a:drop"]', encoding="utf-8")
    assert [r.field for r in load_rules_file(js)] == ["a"]


def test_rules_file_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("email:hash\n# ok\nphone:mask=1\n", encoding="utf-8")
    with pytest.raises(RuleError, match=r"bad.txt'?: line 3: rule 'phone:mask=1'"):
        load_rules_file(bad)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules_file(tmp_path / "missing.txt")
    js = tmp_path / "bad.json"
    js.write_text('{"rules": [1]}', encoding="utf-8")
    with pytest.raises(RuleError, match="list of rule strings"):
        load_rules_file(js)
    js.write_text('["x:nope"]', encoding="utf-8")
    with pytest.raises(RuleError, match=r"rules\[0\]: rule 'x:nope'"):
        load_rules_file(js)


def test_hash_key_from_environment_never_shown() -> None:
    rs = RuleSet([parse_rule("f:hash")], hash_key_env="MY_HASH_KEY", environ={"MY_HASH_KEY": "topsecret"})
    assert rs.hash_keyed and rs.hash_key == b"topsecret"
    assert "topsecret" not in repr(rs)
    assert not RuleSet([], environ={}).hash_keyed
    with pytest.raises(RuleError, match="MY_HASH_KEY is not set") as info:
        RuleSet([], hash_key_env="MY_HASH_KEY", hash_key_required=True, environ={})
    assert "topsecret" not in str(info.value)


def test_redact_json_artifact_by_field_name_at_any_depth() -> None:
    rules = [parse_rule("token:replace_with=<redacted>"), parse_rule("email:mask=1:4:*"),
             parse_rule("ssn:drop"), parse_rule("card:hash"), parse_rule("note:truncate=3")]
    artifact = {
        "token": "abc123", "ok": True,
        "env": [["HOME", "/root"]],
        "stages": [{"email": "jane@example.com", "ssn": "123-45-6789", "id": 4},
                   {"nested": {"card": 4111111111111111, "note": "long note"}}],
        "cfg": {"token": {"k": "v"}},
    }
    before = repr(artifact)
    out = redact_json_artifact(artifact, rules)
    assert repr(artifact) == before  # the input is not modified
    assert out == {
        "token": "<redacted>", "ok": True,
        "env": [["HOME", "/root"]],
        "stages": [{"email": "j***********.com", "id": 4},
                   {"nested": {"card": sha(b"4111111111111111"), "note": "lon"}}],
        "cfg": {"token": "<redacted>"},
    }


def test_redact_json_artifact_non_scalar_under_text_rule_is_not_leaked() -> None:
    out = redact_json_artifact({"secret": {"a": [1, 2]}, "other": None},
                               RuleSet([parse_rule("secret:hash"), parse_rule("other:mask=0:0:*")]))
    assert out == {"secret": sha(b'{"a":[1,2]}'), "other": "****"}
