"""Helpers shared by the benchmarks."""
from __future__ import annotations

import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
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


def start_lab(state_dir: Path, *extra: str, timeout: float = 30, root: Path = ROOT) -> subprocess.Popen:
    """`mdmlab up` in its own process; ``root``: the checkout whose lab runs (another one to compare designs)."""
    proc = subprocess.Popen([*MDMLAB, "up", "--state-dir", str(state_dir), "--https-port", "0", "--dns-port", "0",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
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


# -- process accounting (Linux /proc) ----------------------------------------------------------------------------

def cpu_seconds(pid: int | str, tid: int | None = None) -> float:
    """User + system CPU time a process (or one of its threads, ``tid``) has used so far."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """Resident set size now and at its peak (VmRSS, VmHWM), in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class HandshakeCounter:
    """Counts the TLS handshakes this process makes as a client (every new connection of every device)."""

    def __init__(self):
        self.count = 0
        self._original = ssl.SSLSocket.do_handshake
        self._lock = threading.Lock()

    def __enter__(self) -> HandshakeCounter:
        counter, original = self, self._original

        def do_handshake(sock, *args, **kwargs):
            with counter._lock:
                counter.count += 1
            return original(sock, *args, **kwargs)

        ssl.SSLSocket.do_handshake = do_handshake
        return self

    def __exit__(self, *exc) -> None:
        ssl.SSLSocket.do_handshake = self._original


def lab_info(state_dir: Path) -> dict:
    return json.loads((state_dir / "lab.json").read_text())
