"""The recording HTTP server the policy and action tests post to answers what it is scripted to."""

from __future__ import annotations

import httpx

from policy_support import HttpTarget


def test_recording_server_answers_scripted_statuses(http_target: HttpTarget) -> None:
    http_target.recorder.statuses = [503]
    with httpx.Client(timeout=5) as client:
        assert client.post(http_target.base + "/x", content=b"a").status_code == 503
        assert client.post(http_target.base + "/x", content=b"b").status_code == 200
    assert [r.body for r in http_target.recorder.posts()] == [b"a", b"b"]
