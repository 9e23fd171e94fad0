"""The retry shape of action stages: exponential backoff from BYTEOR_ACTION_RETRY_BASE_MS,
capped; BYTEOR_ACTION_MAX_RETRIES bounds the attempts; bad values are usage errors naming the
variable. (How many attempts a stage really makes is tested against a real server in
test_actions_http.py; the waits are checked here, never timed.)"""

from __future__ import annotations

import pytest

from byteor import UsageError
from byteor.actions import RetryConfig
from byteor.actions.http_post import HttpPostAction
from byteor.actions.retry import DEFAULT_BASE_MS, DEFAULT_MAX_RETRIES, MAX_DELAY_S


def test_defaults_and_exponential_schedule() -> None:
    cfg = RetryConfig.from_env({})
    assert (cfg.max_retries, cfg.base_ms) == (DEFAULT_MAX_RETRIES, DEFAULT_BASE_MS) == (3, 100)
    assert [cfg.delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.8]
    custom = RetryConfig.from_env({"BYTEOR_ACTION_MAX_RETRIES": "5", "BYTEOR_ACTION_RETRY_BASE_MS": "250"})
    assert (custom.max_retries, custom.base_ms) == (5, 250)
    assert [custom.delay(n) for n in range(3)] == [0.25, 0.5, 1.0]


def test_delay_is_capped() -> None:
    cfg = RetryConfig(max_retries=100, base_ms=1000)
    assert cfg.delay(4) == 16.0 and cfg.delay(5) == MAX_DELAY_S == 30.0
    assert cfg.delay(10_000) == MAX_DELAY_S  # no overflow for absurd attempt numbers
    assert RetryConfig(max_retries=0, base_ms=0).delay(3) == 0.0


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("BYTEOR_ACTION_MAX_RETRIES", "three", "is not an integer"),
    ("BYTEOR_ACTION_MAX_RETRIES", "-1", "must be a finite number >= 0"),
    ("BYTEOR_ACTION_RETRY_BASE_MS", "1.5", "is not an integer"),
    ("BYTEOR_ACTION_RETRY_BASE_MS", "-5", "must be a finite number >= 0"),
])
def test_bad_values_name_the_variable(name: str, value: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as info:
        RetryConfig.from_env({name: value})
    assert name in str(info.value) and info.value.exit_code == 2
    with pytest.raises(UsageError, match=name):  # the stage reads them when it is built
        HttpPostAction.from_key("http_post:http://127.0.0.1:9/x", {name: value})


def test_stage_takes_its_retry_shape_from_the_environment() -> None:
    action = HttpPostAction.from_key("http_post:http://127.0.0.1:9/x",
                                     {"BYTEOR_ACTION_MAX_RETRIES": "0", "BYTEOR_ACTION_RETRY_BASE_MS": "7"})
    try:
        assert action.retry == RetryConfig(max_retries=0, base_ms=7)
    finally:
        action.close()
