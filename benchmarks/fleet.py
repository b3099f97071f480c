"""Fleet throughput, the lab's CPU per enrollment and its memory under a fleet.

`mdmlab up` runs in its own process (as users run it); the fleet runs here (lab.fleet.run, what `mdmlab fleet` runs)
with N devices at concurrency C. Reported: enrollments/s, errors, p50/p95/p99 per stage, the lab's CPU per
enrollment (from /proc), the TLS handshakes each enrollment makes (counted at the devices), and the lab's resident
memory now and at its peak.

    .venv/bin/python benchmarks/fleet.py --devices 2000 --concurrency 8
    .venv/bin/python benchmarks/fleet.py --devices 10000 --concurrency 16      # the memory run
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import HandshakeCounter, cpu_seconds, lab_info, memory_kb, start_lab, stop_lab  # noqa: E402
from lab import fleet  # noqa: E402


def measure(devices: int, concurrency: int, mix: str | None = None, warmup: int = 20, root: Path | None = None) -> dict:
    """``root``: run the lab of another checkout (e.g. an older listener) against this fleet."""
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        proc = start_lab(state_dir, "--fresh", **({"root": root} if root else {}))
        try:
            time.sleep(0.3)
            target = fleet.Target.from_info(lab_info(state_dir))
            fleet.run(target, warmup, min(concurrency, warmup))  # first-use costs (imports, caches) out of the figure
            peak_rss = [0]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.25):
                    peak_rss[0] = max(peak_rss[0], memory_kb(proc.pid)["VmRSS"])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            lab_cpu = cpu_seconds(proc.pid)
            with HandshakeCounter() as handshakes:
                started_cpu = time.process_time()
                report = fleet.run(target, devices, concurrency, fleet.parse_mix(mix))
                client_cpu = time.process_time() - started_cpu
            lab_cpu = cpu_seconds(proc.pid) - lab_cpu
            done.set()
            sampler.join()
            memory = memory_kb(proc.pid)
        finally:
            stop_lab(proc)
    summary = report.to_dict()
    enrolled = max(1, report.enrolled)
    return {**summary, "lab_cpu_ms_per_enrollment": round(lab_cpu * 1000 / enrolled, 2),
            "fleet_cpu_ms_per_enrollment": round(client_cpu * 1000 / enrolled, 2),
            "handshakes_per_enrollment": round(handshakes.count / enrolled, 2),
            "lab_rss_mb": round(memory["VmRSS"] / 1024, 1),
            "lab_peak_rss_mb": round(max(memory["VmHWM"], peak_rss[0]) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mix", default=None)
    parser.add_argument("--lab-from", type=Path, default=None, help="run the lab of this checkout instead")
    args = parser.parse_args()
    result = measure(args.devices, args.concurrency, args.mix, root=args.lab_from)
    print(f"{result['enrolled']} enrolled, {result['failed']} failed in {result['wall_s']} s: "
          f"{result['enrollments_per_s']} enrollments/s; lab CPU {result['lab_cpu_ms_per_enrollment']} ms and fleet "
          f"CPU {result['fleet_cpu_ms_per_enrollment']} ms per enrollment; {result['handshakes_per_enrollment']} "
          f"handshakes per enrollment; lab RSS {result['lab_rss_mb']} MB (peak {result['lab_peak_rss_mb']} MB)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
