"""Every benchmark in one run, each figure beside the floor this machine allows, as the README's table.

    .venv/bin/python benchmarks/report.py                 # floor, start-up, one enrollment, fleet throughput
    .venv/bin/python benchmarks/report.py --memory        # and the 10,000-device memory run (about 5 minutes)
    .venv/bin/python benchmarks/report.py --baseline ../old   # and the fleet against another checkout's lab

Ratios to the floor (openssl s_server + s_time, new handshakes; see floor.py), h = TLS handshakes per enrollment:
  start-up                 ready time ÷ the CPU of one handshake at the floor
  one enrollment p50       p50 ÷ the CPU of its h handshakes at the floor
  fleet throughput         enrollments/s ÷ the ceiling if an enrollment cost only its h handshakes at the floor,
                           on every core (floor handshakes per CPU-second × cores ÷ h)
  lab CPU per enrollment   the lab's CPU per enrollment ÷ the server side of its h handshakes at the floor
                           (target: within 2x)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import enroll, fleet, floor, startup  # noqa: E402

STARTUP_RUNS = 10


def _startup() -> dict:
    fresh, resumed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        for _ in range(STARTUP_RUNS):
            fresh.append(startup.ready_ms(state_dir, fresh=True)[1])
            resumed.append(startup.ready_ms(state_dir, fresh=False)[1])
    return {"fresh_p50_ms": round(statistics.median(fresh), 1), "resumed_p50_ms": round(statistics.median(resumed), 1)}


def run(devices: int, concurrency: int, memory: bool, baseline: Path | None = None) -> dict:
    cores = os.cpu_count() or 1
    result = {"cores": cores, "load_average": os.getloadavg()[0], "floor": floor.measure()}
    result["startup"] = _startup()
    result["enroll"] = enroll.measure_flow()
    result["fleet"] = fleet.measure(devices, concurrency)
    if baseline is not None:  # the same fleet against another checkout's lab, right after
        result["baseline"] = fleet.measure(devices, concurrency, root=baseline)
        result["baseline"]["root"] = str(baseline)
    if memory:
        result["memory"] = fleet.measure(10_000, 16)
    return result


def table(r: dict) -> str:
    f, cores = r["floor"], r["cores"]
    c, s = f["cpu_ms_per_handshake"], f["server_cpu_ms_per_handshake"]
    e, fl = r["enroll"], r["fleet"]
    h = fl["handshakes_per_enrollment"]
    ceiling = f["handshakes_per_cpu_s"] * cores / h
    rows = [
        ("the floor: openssl s_server + s_time, new TLS handshakes", f"{f['handshakes_per_cpu_s']:.0f} per CPU-second "
         f"({c:.2f} ms CPU each, {s:.2f} ms of it the server's)", "1", ""),
        ("`mdmlab up` → ready, fresh state (new CA)", f"{r['startup']['fresh_p50_ms']:.0f} ms",
         f"{r['startup']['fresh_p50_ms'] / c:.0f}× a handshake", "< 500 ms"),
        ("`mdmlab up` → ready, resumed state", f"{r['startup']['resumed_p50_ms']:.0f} ms",
         f"{r['startup']['resumed_p50_ms'] / c:.0f}× a handshake", "< 500 ms"),
        (f"one enrollment, new device, in-process (p50 / p99; {e['handshakes_per_enrollment']:.0f} handshakes)",
         f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f} ms", f"{e['p50_ms'] / (e['handshakes_per_enrollment'] * c):.1f}× "
         "its handshakes", "p50 < 25 ms"),
        (f"fleet: {fl['devices']} devices at concurrency {fl['concurrency']}, enroll + check-in",
         f"{fl['enrollments_per_s']:.1f} enrollments/s, {fl['failed']} errors",
         f"{fl['enrollments_per_s'] / ceiling:.2f} of {ceiling:.0f}/s", "≥ 100/s, 0 errors"),
        ("lab CPU per enrollment (fleet run)", f"{fl['lab_cpu_ms_per_enrollment']:.1f} ms",
         f"{fl['lab_cpu_ms_per_enrollment'] / (h * s):.1f}× its handshakes' server side "
         f"({fl['lab_cpu_ms_per_enrollment'] / (h * c):.1f}× their whole cost, both sides)", "≤ 2×"),
        ("fleet (device) CPU per enrollment", f"{fl['fleet_cpu_ms_per_enrollment']:.1f} ms",
         f"{fl['fleet_cpu_ms_per_enrollment'] / (h * (c - s)):.1f}× its handshakes' client side", ""),
    ]
    if "baseline" in r:
        b = r["baseline"]
        rows.append((f"the same fleet against the lab of {b['root']}", f"{b['enrollments_per_s']:.1f} enrollments/s, "
                     f"{b['failed']} errors; lab CPU {b['lab_cpu_ms_per_enrollment']:.1f} ms per enrollment",
                     f"{b['enrollments_per_s'] / ceiling:.2f} of {ceiling:.0f}/s; "
                     f"{b['lab_cpu_ms_per_enrollment'] / (h * s):.1f}× its handshakes' server side", ""))
    if "memory" in r:
        m = r["memory"]
        rows.append((f"lab memory under a {m['devices']:,}-device fleet (peak RSS)", f"{m['lab_peak_rss_mb']:.0f} MB",
                     f"{m['enrollments_per_s']:.1f} enrollments/s, {m['failed']} errors", "< 300 MB"))
    out = ["| what | measured | ratio to the floor | target |", "| --- | --- | --- | --- |"]
    out += [f"| {a} | {b} | {c_} | {d} |" for a, b, c_, d in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description="all benchmarks, with ratios to the floor")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="also the 10,000-device memory run")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also run the fleet against the lab of this checkout (another design), same run")
    args = parser.parse_args()
    result = run(args.devices, args.concurrency, args.memory, args.baseline)
    print(table(result))
    print(f"\n{result['cores']} cores, load average {result['load_average']:.2f} at the start")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
