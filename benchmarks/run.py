"""``byteor run`` file to file vs a plain Python loop: ``python -m benchmarks.run [--quick] [--json PATH]``.

Two jobs, each on N messages (5 M; 200 k with ``--quick``) of 12-19 bytes, read from a file and
written to a file (both under /dev/shm, so the disk is not what is measured):

* ``lines``: ``--input-format=lines`` -> ``add_u8`` (+1 to every byte) -> ``--output=hex``;
* ``len32``: ``--input-format=len32`` -> ``add_u8`` -> ``--output=len32``.

Rows per job: ``byteor_run`` is the whole command ``byteor run SPEC --input=F --output-file=O``
(multi-process: the parent parses and writes in C, the stage runs in its own process), timed from
start to exit, process start-up included; ``naive_python`` is a single-process Python loop doing the
same work (``bytes.translate`` for the +1, ``bytes.hex`` / a length prefix for the output), run as
``python -c`` and timed the same way. Both outputs are compared byte for byte. Ratios are within
the run; the goals (>= 4x on lines, >= 10x on len32) are printed with a met / NOT met verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ._common import Meter, Result, parser, print_table, write_json

GOALS = {"lines": 4.0, "len32": 10.0}

SPEC = """pipeline.name=bench-run-{tag}
pipeline.target=SingleRing
pipeline.ring.capacity=65536
pipeline.ring.slot_bytes=64
pipeline.stages.0.id=bump
pipeline.stages.0.op=add_u8
pipeline.stages.0.delta=1
"""

# The same job as one Python loop: read, add 1 to every byte, write in the output framing.
NAIVE = {
    "lines": """
import sys
plus = bytes((i + 1) & 255 for i in range(256))
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    write = out.write
    for line in src:
        write(line[:-1].translate(plus).hex().encode() + b"\\n")
""",
    "len32": """
import sys
plus = bytes((i + 1) & 255 for i in range(256))
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    read, write = src.read, out.write
    while head := read(4):
        write(head + read(int.from_bytes(head, "little")).translate(plus))
""",
}


def messages(n: int) -> list[bytes]:
    return [b"msg-%08d-%d" % (i, i % 997) for i in range(n)]


def write_inputs(directory: Path, n: int) -> dict[str, Path]:
    msgs = messages(n)
    lines = directory / "in.lines"
    lines.write_bytes(b"\n".join(msgs) + b"\n")
    len32 = directory / "in.len32"
    pack = struct.Struct("<I").pack
    len32.write_bytes(b"".join(pack(len(m)) + m for m in msgs))
    return {"lines": lines, "len32": len32}


def timed(cmd: list[str], out: Path, env: dict[str, str]) -> tuple[float, float, float | None]:
    """(wall seconds, CPU seconds of the command and its children, the run's own ``elapsed_s`` when
    the command prints a ``--json`` summary) of one run of ``cmd``."""
    out.unlink(missing_ok=True)
    with Meter() as m:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    elapsed = float(json.loads(r.stdout)["elapsed_s"]) if r.stdout.startswith("{") else None
    return m.wall_s, m.children_cpu_s, elapsed


def bench_job(job: str, n: int, runs: int, work: Path, *, inputs: dict[str, Path], env: dict[str, str]) -> list[Result]:
    spec = work / f"{job}.kv"
    spec.write_text(SPEC.format(tag=job))
    byteor = str(Path(sys.executable).parent / "byteor")
    ring_path = f"/dev/shm/byteor/bench-run-{uuid.uuid4().hex[:8]}"
    out_b, out_n = work / f"{job}.byteor.out", work / f"{job}.naive.out"
    output = "hex" if job == "lines" else "len32"
    commands = {
        "byteor_run": ([byteor, "run", str(spec), f"--input={inputs[job]}", f"--input-format={job}",
                        f"--output-file={out_b}", f"--output={output}", f"--ring-path={ring_path}", "--json"],
                       out_b),
        "naive_python": ([sys.executable, "-c", NAIVE[job], str(inputs[job]), str(out_n)], out_n),
    }
    notes = {
        "byteor_run": f"byteor run {job} -> add_u8 -> {output}, multi-process, file to file (start-up included)",
        "naive_python": f"one Python loop: {job} -> translate(+1) -> {output}, file to file (start-up included)",
    }
    rates: dict[str, list[float]] = {name: [] for name in (*commands, "byteor_session")}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # alternate the two, so a busy moment of the machine hits both alike
        for name, (cmd, out) in commands.items():
            wall, used, elapsed = timed(cmd, out, env)
            rates[name].append(n / wall)
            cpu[name].append(used / n * 1e6)
            if elapsed is not None:
                rates["byteor_session"].append(n / elapsed)
    notes["byteor_session"] = ("the byteor_run runs timed by their summary's elapsed_s: pipeline start (stage "
                               "process start-up included) to drained; CLI start-up and exit excluded")
    results = []
    for name in ("naive_python", "byteor_run", "byteor_session"):
        values = rates[name]
        results.append(Result(name=f"{job}.{name}", msgs_per_s=statistics.median(values),
                              range=(min(values), max(values)), note=notes[name],
                              cpu_s_per_m=statistics.median(cpu[name]) if name in cpu else None))
    if out_b.read_bytes() != out_n.read_bytes():
        raise RuntimeError(f"{job}: byteor run and the Python loop wrote different output")
    for out in (out_b, out_n):
        out.unlink(missing_ok=True)
    return results


def main() -> None:
    ap = parser("byteor run file to file (multi-process, native edges) vs a single-process Python loop")
    args = ap.parse_args()
    n = 200_000 if args.quick else 5_000_000
    runs = 1 if args.quick else 3
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
    work = Path(tempfile.mkdtemp(prefix="byteor-bench-run-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    results: list[Result] = []
    try:
        inputs = write_inputs(work, n)
        for job in GOALS:
            results += bench_job(job, n, runs, work, inputs=inputs, env=env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r.name: r.msgs_per_s or 0.0 for r in results}
    goals: dict[str, Any] = {}
    for job, goal in GOALS.items():
        for row in ("byteor_run", "byteor_session"):
            ratio = by[f"{job}.{row}"] / by[f"{job}.naive_python"]
            goals[f"{job}.{row}_vs_naive_python"] = {"ratio": round(ratio, 2), "goal": goal, "met": ratio >= goal}
    for job in GOALS:
        print_table(f"byteor run file to file, {job}, {n:,} messages", [r for r in results if r.name.startswith(job)],
                    ratio_to=[f"{job}.naive_python"])
    for name, g in goals.items():
        print(f"{name}: {g['ratio']:.2f}x (goal >= {g['goal']}x: {'met' if g['met'] else 'NOT met'})")
    if args.json:
        write_json(args.json, results, extra={"goals": goals, "n": n, "runs": runs})


if __name__ == "__main__":
    main()
