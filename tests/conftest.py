"""Shared fixtures: run the real console scripts, and per-test scratch directories."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHM = Path("/dev/shm/byteor")

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def _run_script(script: str, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
                input: str | None = None, cwd: str | os.PathLike[str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = BIN / script
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    if env:
        full_env.update(env)
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=full_env,
                          input=input, cwd=cwd, timeout=timeout, check=False)


@pytest.fixture
def cli() -> CliRunner:
    """``cli("validate", path)`` runs the installed ``byteor`` script; ``cli.script`` picks another."""

    def run(*args: str | os.PathLike[str], script: str = "byteor", **kw: object) -> subprocess.CompletedProcess[str]:
        return _run_script(script, *args, **kw)  # type: ignore[arg-type]

    return run


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def ring_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh ring/lane directory under /dev/shm/byteor; the test fails if anything is left in it."""
    path = SHM / f"t-{request.node.module.__name__.removeprefix('test_')[:12]}-{uuid.uuid4().hex[:12]}"
    yield path
    assert not path.exists(), f"leftover: {path} {list(path.iterdir())}"
