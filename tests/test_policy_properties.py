"""Properties: any change to a credential is refused; allowlist prefixes never leak to lookalike
hosts or sibling paths; base64url has exactly one spelling."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byteor import ApprovalError
from byteor._formats import b64url_decode, b64url_encode
from byteor.actions import parse_target_url, url_admitted
from byteor.actions.http_post import allowlist_from_env
from byteor.policy import KeySet, load_key_set, verify_credential
from policy_support import new_signer, write_key_set

H = "sha256:" + "ab" * 32
LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)
SEGMENT = st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=10)
SIGNER = new_signer("prop")
CRED = SIGNER.issue(H, "prod", ["http_post"])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:

    path = write_key_set(tmp_path_factory.mktemp("k") / "keys.json", SIGNER)
    return load_key_set(str(path))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(CRED) - 1),
       st.sampled_from(list(string.ascii_letters + "-_.=")))
def test_any_character_change_is_refused(keys: KeySet, index: int, char: str) -> None:
    if CRED[index] == char:
        return
    changed = CRED[:index] + char + CRED[index + 1:]
    with pytest.raises(ApprovalError) as info:
        verify_credential(changed, keys=keys, spec_hash=H, posture="prod", required=["http_post"])
    assert info.value.check in ("decode", "signature")


@settings(max_examples=200, deadline=None)
@given(LABEL, LABEL, SEGMENT, SEGMENT)
def test_allowlist_never_admits_lookalikes(host: str, evil: str, path: str, suffix: str) -> None:
    allow = allowlist_from_env({"BYTEOR_HTTP_POST_ALLOWLIST": f"https://{host}.example.com/{path}"})
    assert url_admitted(parse_target_url(f"https://{host}.example.com/{path}/{suffix}"), allow)
    assert url_admitted(parse_target_url(f"https://{host}.example.com/{path}"), allow)
    assert not url_admitted(parse_target_url(f"https://{host}.example.com/{path}{suffix}"), allow)
    assert not url_admitted(parse_target_url(f"https://{host}.example.com.{evil}.net/{path}"), allow)
    assert not url_admitted(parse_target_url(f"https://{evil}{host}.example.com/{path}"), allow)
    assert not url_admitted(parse_target_url(f"http://{host}.example.com/{path}"), allow)
    assert not url_admitted(parse_target_url(f"https://{host}.example.com:444/{path}"), allow)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_base64url_round_trip_and_one_spelling(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and b64url_decode(text) == data
    for bad in (text + "=", text + " ", text.replace("-", "+"), text.replace("_", "/")):
        if bad != text:
            with pytest.raises(ValueError):
                b64url_decode(bad)
