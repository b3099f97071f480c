"""One full enrollment: the `mdmlab enroll` command (wall) and the device flow in-process (p50/p99), with the lab's
CPU per enrollment and the TLS handshakes each makes."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (  # noqa: E402
    MDMLAB,
    ROOT,
    HandshakeCounter,
    cpu_seconds,
    lab_info,
    print_results,
    start_lab,
    stop_lab,
    summary,
)
from lab.device import Device  # noqa: E402
from lab.net import Network  # noqa: E402

COMMAND_RUNS = 10
FLOW_RUNS = 200
IDENTIFIER, PASSWORD = "eliza@betterbag.test", "carry-on-2026"


def measure_flow(runs: int = FLOW_RUNS, budget_s: float = 120) -> dict:
    """Enrollments one after another, each by a new device, against a lab in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        proc = start_lab(state_dir, "--fresh")
        try:
            info = lab_info(state_dir)
            network = Network.from_lab_info(info)
            for _ in range(5):  # warm-up: first-use costs out of the figure
                Device(network).enroll(IDENTIFIER, PASSWORD)
            flow, deadline = [], time.monotonic() + budget_s
            lab_cpu = cpu_seconds(proc.pid)
            with HandshakeCounter() as handshakes:
                for _ in range(runs):
                    if time.monotonic() > deadline:
                        break
                    device = Device(network)
                    t0 = time.perf_counter()
                    trace = device.enroll(IDENTIFIER, PASSWORD)
                    flow.append((time.perf_counter() - t0) * 1000)
                    device.close()
                    if trace.outcome != "enrolled":
                        raise SystemExit(trace.render())
            lab_cpu = cpu_seconds(proc.pid) - lab_cpu
        finally:
            stop_lab(proc)
    return {**summary("enrollment flow (in-process, new device)", flow, 25),
            "lab_cpu_ms_per_enrollment": round(lab_cpu * 1000 / len(flow), 2),
            "handshakes_per_enrollment": round(handshakes.count / len(flow), 2)}


def measure_command(runs: int = COMMAND_RUNS) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        proc = start_lab(state_dir, "--fresh")
        try:
            command = []
            for _ in range(runs):
                t0 = time.perf_counter()
                result = subprocess.run([*MDMLAB, "enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir",
                                         str(state_dir)], capture_output=True, cwd=ROOT, timeout=60)
                command.append((time.perf_counter() - t0) * 1000)
                if result.returncode != 0:
                    raise SystemExit(f"enroll failed: {result.stdout.decode()}")
        finally:
            stop_lab(proc)
    return summary("mdmlab enroll (command, wall)", command, 2000)


def main() -> None:
    flow = measure_flow()
    print_results([measure_command(), flow])
    print(f"lab CPU per enrollment {flow['lab_cpu_ms_per_enrollment']} ms; "
          f"{flow['handshakes_per_enrollment']} TLS handshakes per enrollment")


if __name__ == "__main__":
    main()
