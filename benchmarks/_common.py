"""Helpers shared by the benchmarks."""
from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

MDMLAB = [sys.executable, "-m", "lab"]
ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, values_ms: list[float], target_ms: float | None = None) -> dict:
    result = {"name": name, "runs": len(values_ms), "p50_ms": round(statistics.median(values_ms), 2),
              "p99_ms": round(percentile(values_ms, 99), 2), "min_ms": round(min(values_ms), 2),
              "max_ms": round(max(values_ms), 2)}
    if target_ms is not None:
        result["target_ms"] = target_ms
        result["meets_target"] = result["p50_ms"] < target_ms
    return result


def print_results(results: list[dict]) -> None:
    for r in results:
        target = f"  target < {r['target_ms']} ms: {'yes' if r['meets_target'] else 'NO'}" if "target_ms" in r else ""
        print(f"{r['name']:<40} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  ({r['runs']} runs){target}")
    print(json.dumps(results))


def start_lab(state_dir: Path, *extra: str, timeout: float = 30) -> subprocess.Popen:
    proc = subprocess.Popen([*MDMLAB, "up", "--state-dir", str(state_dir), "--https-port", "0", "--dns-port", "0",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while not (state_dir / "lab.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("mdmlab up did not start")
        time.sleep(0.002)
    return proc


def stop_lab(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
