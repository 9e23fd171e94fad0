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

#: Shared fixtures and helpers of the observability, policy, action, replay, broker adapter and console
#: tests (tests import helpers from them).
pytest_plugins = ["obs_support", "policy_support", "replay_support", "broker_support", "console_support",
                  "grpc_support", "store_support", "web_support"]


def _run_script(script: str, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
                input: str | None = None, cwd: str | os.PathLike[str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = BIN / script
    # a clean environment: no BYTEOR_* settings and no PYTHONPATH (stage modules are found beside
    # the spec, as a user's would be); a test that wants them passes them in ``env``
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_") and k != "PYTHONPATH"}
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


# --------------------------------------------------------------------------------------------------
# Execution modes: every stage behaviour runs in all four executors through one fixture
# --------------------------------------------------------------------------------------------------

#: SingleRing in one process, SingleRing multi-process, LaneGraph in one process, LaneGraph multi-process.
EXECUTION_MODES = ("sp", "mp", "lanegraph-sp", "lanegraph-mp")


def chain_spec_text(mode: str, keys: list[str], *, name: str = "chain", slot_bytes: int = 64,
                    capacity: int = 64) -> str:
    """spec.kv text of a linear chain of stages ``keys`` (resolver keys, or the builtin ops
    ``identity``/``add_u8``): SingleRing stages for ``sp``/``mp``, LaneGraph stage roles between
    events lanes for the ``lanegraph-*`` modes."""

    def op(prefix: str, key: str) -> list[str]:
        if key in ("identity", "add_u8"):
            return [f"{prefix}.op={key}"]
        return [f"{prefix}.op=resolver", f"{prefix}.resolver_key={key}"]

    if not mode.startswith("lanegraph"):
        lines = [f"pipeline.name={name}", "pipeline.target=SingleRing", f"pipeline.ring.capacity={capacity}",
                 f"pipeline.ring.slot_bytes={slot_bytes}"]
        for i, key in enumerate(keys):
            lines += [f"pipeline.stages.{i}.id=s{i}", *op(f"pipeline.stages.{i}", key)]
            if i:
                lines.append(f"pipeline.stages.{i}.depends_on.0={i - 1}")
        return "\n".join(lines) + "\n"
    lines = [f"pipeline.name={name}", "pipeline.target=LaneGraph"]
    for i in range(len(keys) + 1):
        lines += [f"pipeline.lanes.{i}.name=l{i}", f"pipeline.lanes.{i}.kind=events",
                  f"pipeline.lanes.{i}.capacity={capacity}", f"pipeline.lanes.{i}.slot_bytes={slot_bytes}"]
    lines += ["pipeline.endpoints.0.name=in", "pipeline.endpoints.0.direction=ingress", "pipeline.endpoints.0.lane=l0",
              "pipeline.endpoints.1.name=out", "pipeline.endpoints.1.direction=egress",
              f"pipeline.endpoints.1.lane=l{len(keys)}"]
    for i, key in enumerate(keys):
        lines += [f"pipeline.roles.{i}.name=s{i}", f"pipeline.roles.{i}.kind=stage",
                  f"pipeline.roles.{i}.inputs.0=l{i}", f"pipeline.roles.{i}.outputs.0=l{i + 1}",
                  *op(f"pipeline.roles.{i}", key)]
    return "\n".join(lines) + "\n"


def mode_cli_args(mode: str, ring_dir: Path) -> list[str]:
    """``byteor run`` options selecting ``mode`` (shared-memory files under ``ring_dir``)."""
    if mode in ("sp", "lanegraph-sp"):
        return ["--sp"]
    return [f"--ring-path={ring_dir}", "--wait=block"]


@pytest.fixture(params=EXECUTION_MODES)
def execution_mode(request: pytest.FixtureRequest) -> str:
    """One of :data:`EXECUTION_MODES`; a test taking it runs once per executor."""
    return str(request.param)


@pytest.fixture
def write_stage_module(tmp_path: Path) -> Callable[[str], str]:
    """``write_stage_module(source)`` writes a uniquely named module into ``tmp_path`` (beside the specs the
    test writes there) and returns its name, for ``py:<name>:<function>`` keys."""

    def write(source: str) -> str:
        name = f"stages_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write
