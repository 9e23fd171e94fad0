"""Every command ends quietly when the reader of its output is gone (`| head`): no traceback, no
"Exception ignored" message, whatever the product and the verb."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, EXAMPLES

SCRIPTS = ("byteor", "byteor-runtime", "byteor-edgeplane", "byteor-actiongraph", "byteor-dataguard")
COMMANDS = (
    ["--help"],
    ["run", "--help"],
    ["describe", str(EXAMPLES / "chain.kv")],
    ["capabilities"],
    ["run", str(EXAMPLES / "chain.kv"), "--sp", "--input-hex=00"],
)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:30])
def test_a_closed_pipe_ends_the_command_quietly(script: str, args: list[str], tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        r = subprocess.run([str(BIN / script), *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           timeout=60, check=False, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), r.stderr
