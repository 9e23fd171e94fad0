"""DataGuard fused check+redact throughput against a straightforward Python baseline.

The same records, about 200 bytes each, measured in one run:

* ``json baseline``: JSON bytes -> ``json.loads`` -> type/required/unknown-field checks on the dict ->
  the three rules as dict edits -> ``json.dumps`` (what one would write without DataGuard);
* ``fused (C kernel)``: ``DataGuard.process_into`` on USM1/mapkv envelopes with the C kernel
  (``byteor._native.DgPlan``): envelope + schema check + the same three rules, one pass, output into a
  preallocated buffer;
* ``fused (Python engine)``: the same with ``BYTEOR_DATAGUARD_NATIVE=0`` (the reference engine);
* ``check only (C kernel)``: the check flow (no redaction);
* ``dataguard:<profile> stage``: the resolved stage function rewriting a ring slot in place.

Rules: ``email:mask=1:4:*``, ``phone:hash``, ``note:truncate=16``. Goal: fused >= 5x the baseline.

    python -m benchmarks.dataguard [--quick] [--json PATH] [--records N]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from byteor._stage import StageContext
from byteor.dataguard import codecs, envelope
from byteor.dataguard.engine import DataGuard, GuardConfig
from byteor.dataguard.rules import RuleSet, parse_rules
from byteor.dataguard.stage import resolve_dataguard

from ._common import Result, bench_dir, parser, print_table, repeat, write_json

RULES = ["email:mask=1:4:*", "phone:hash", "note:truncate=16"]
FIELDS = [("user_id", "int", True), ("email", "string", True), ("name", "string", True),
          ("phone", "string", False), ("country", "string", True), ("active", "bool", True),
          ("note", "string", False)]
TYPES = {"int": int, "string": str, "bool": bool}
BASELINE_TYPES = {name: TYPES[t] for name, t, _ in FIELDS}
REQUIRED = frozenset(name for name, _, req in FIELDS if req)
NOTES = ["callback requested about invoice", "shipping delayed, customer informed by phone",
         "VIP account: escalate", "address change pending verification"]


def records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = rng.choice(["jane", "omar", "li", "sofia", "mateo", "ana", "yuki", "noah"])
        last = rng.choice(["doe", "okafor", "chen", "rossi", "garcia", "silva", "tanaka", "smith"])
        out.append({
            "user_id": rng.randrange(10**9), "email": f"{first}.{last}{i % 97}@example.com",
            "name": f"{first.title()} {last.title()}", "phone": f"+1-555-{rng.randrange(10**4):04d}-{i % 10000:04d}",
            "country": rng.choice(["DE", "US", "BR", "JP", "IN"]), "active": rng.random() < 0.5,
            "note": rng.choice(NOTES) + f" (ticket {rng.randrange(10**6)}, queue {i % 7})",
        })
    return out


def write_registry(root: Path) -> None:
    d = root / "7" / "1"
    d.mkdir(parents=True, exist_ok=True)
    schema = {"codec": "mapkv", "fields": [{"name": n, "type": t, "required": r} for n, t, r in FIELDS]}
    (d / "v1.json").write_text(json.dumps(schema), encoding="utf-8")


def baseline(raw: bytes) -> bytes | None:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        return None
    for k, v in obj.items():
        t = BASELINE_TYPES.get(k)
        if t is None or type(v) is not t:
            return None
    if not obj.keys() >= REQUIRED:
        return None
    email = obj["email"]
    if len(email) > 5:
        obj["email"] = email[:1] + "*" * (len(email) - 5) + email[-4:]
    phone = obj.get("phone")
    if phone is not None:
        obj["phone"] = "sha256:" + hashlib.sha256(phone.encode("utf-8")).hexdigest()
    note = obj.get("note")
    if note is not None and len(note) > 16:
        obj["note"] = note[:16]
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def guard(root: Path, flow: str, native: bool) -> DataGuard:
    old = os.environ.get("BYTEOR_DATAGUARD_NATIVE")
    os.environ["BYTEOR_DATAGUARD_NATIVE"] = "1" if native else "0"
    try:
        return DataGuard(GuardConfig(str(root), 7, 1, 1, mode="mapkv", flow=flow,
                                     rules=RuleSet(parse_rules(RULES), environ={})))
    finally:
        if old is None:
            del os.environ["BYTEOR_DATAGUARD_NATIVE"]
        else:
            os.environ["BYTEOR_DATAGUARD_NATIVE"] = old


def rate(loop: Callable[[int], None], n: int, runs: int) -> Result:
    def one() -> float:
        t0 = time.perf_counter()
        loop(n)
        return n / (time.perf_counter() - t0)

    stat = repeat(one, runs)
    return Result(name="", msgs_per_s=stat.median, range=(stat.lo, stat.hi))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1000, help="distinct records cycled through (default 1000)")
    args = p.parse_args(argv)
    n = 20_000 if args.quick else 400_000
    runs = 1 if args.quick else 3
    root = Path(bench_dir()) / "registry"
    write_registry(root)
    recs = records(args.records)
    envs = [envelope.encode(codecs.encode_mapkv(r), codec_id=1, schema_id=7, msg_type=1, msg_version=1)
            for r in recs]
    jsons = [json.dumps(r, separators=(",", ":")).encode("utf-8") for r in recs]
    avg_env = sum(map(len, envs)) / len(envs)
    avg_json = sum(map(len, jsons)) / len(jsons)

    # The two sides must compute the same thing before their speed is compared.
    check = guard(root, "fused", native=False)
    for r, e, j in zip(recs[:50], envs[:50], jsons[:50], strict=True):
        out = check.process(e)
        assert out is not None
        mine = codecs.decode_mapkv(envelope.decode(out)[1])
        theirs = json.loads(baseline(j) or b"null")
        assert mine == theirs, (r, mine, theirs)

    k = len(envs)
    results: list[Result] = []

    def measure(name: str, fn: Callable[[bytes, Any], Any], data: list[bytes], note: str) -> None:
        out = bytearray(70_000)

        def loop(count: int) -> None:
            for i in range(count):
                fn(data[i % k], out)

        row = rate(loop, n, runs)
        row.name, row.note = name, note
        results.append(row)

    measure("json baseline", lambda raw, _out: baseline(raw), jsons,
            f"json.loads, dict checks + edits, json.dumps; {avg_json:.0f}-byte JSON")
    measure("fused (C kernel)", guard(root, "fused", native=True).process_into, envs,
            f"{avg_env:.0f}-byte USM1 mapkv envelopes, 3 rules")
    measure("check only (C kernel)", guard(root, "check", native=True).process_into, envs, "no redaction")
    measure("fused (Python engine)", guard(root, "fused", native=False).process_into, envs,
            "BYTEOR_DATAGUARD_NATIVE=0: the reference engine")

    profiles = Path(bench_dir()) / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "bench.json").write_text(json.dumps({
        "registry_root": str(root), "schema_id": 7, "msg_type": 1, "required_version": 1, "mode": "mapkv",
        "flow": "fused", "rules": RULES, "report": str(profiles / "bench.report.kv")}), encoding="utf-8")
    stage = resolve_dataguard("dataguard:bench", StageContext(extra={"dataguard_profiles": str(profiles)}))
    slot = bytearray(512)
    view = memoryview(slot)
    lengths = [len(e) for e in envs]

    def stage_loop(count: int) -> None:
        fn = stage.fn
        for i in range(count):
            j = i % k
            length = lengths[j]
            slot[:length] = envs[j]  # the producer's write into the slot, as a ring would
            fn(view, length)

    row = rate(stage_loop, n, runs)
    row.name = "dataguard:<profile> stage"
    row.note = "slot rewritten in place (includes copying each message into the slot)"
    results.append(row)

    print_table(f"DataGuard fused check+redact, {n} messages, rules: {', '.join(RULES)}", results,
                ratio_to=["json baseline"])
    base = results[0].msgs_per_s or 0.0
    fused = next(r for r in results if r.name == "fused (C kernel)").msgs_per_s
    ratio = fused / base if fused and base else None
    goal = {"fused_vs_baseline": ratio, "target": 5.0, "met": bool(ratio and ratio >= 5.0)}
    if ratio is None:
        print("goal fused >= 5x baseline: not measured (no C kernel in this build)")
    else:
        print(f"goal fused >= 5x baseline: {'met' if goal['met'] else 'NOT met'} ({ratio:.1f}x)")
    if args.json:
        write_json(args.json, results, extra={"goals": goal, "messages": n, "records": len(recs),
                                              "envelope_bytes_avg": avg_env, "json_bytes_avg": avg_json})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
