"""One full enrollment: the `mdmlab enroll` command (wall) and the device flow in-process."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import MDMLAB, ROOT, print_results, start_lab, stop_lab, summary  # noqa: E402
from lab.device import Device, Network  # noqa: E402

COMMAND_RUNS = 10
FLOW_RUNS = 200
IDENTIFIER, PASSWORD = "eliza@betterbag.test", "carry-on-2026"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        proc = start_lab(state_dir, "--fresh")
        try:
            command = []
            for _ in range(COMMAND_RUNS):
                t0 = time.perf_counter()
                result = subprocess.run([*MDMLAB, "enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir",
                                         str(state_dir)], capture_output=True, cwd=ROOT, timeout=60)
                command.append((time.perf_counter() - t0) * 1000)
                if result.returncode != 0:
                    raise SystemExit(f"enroll failed: {result.stdout.decode()}")
            info = json.loads((state_dir / "lab.json").read_text())
            network = Network("127.0.0.1", info["dns_port"], info["ca_cert"], info["https_port"])
            flow, deadline = [], time.monotonic() + 120
            for _ in range(FLOW_RUNS):
                if time.monotonic() > deadline:
                    break
                device = Device(network)
                t0 = time.perf_counter()
                trace = device.enroll(IDENTIFIER, PASSWORD)
                flow.append((time.perf_counter() - t0) * 1000)
                device.close()
                if trace.outcome != "enrolled":
                    raise SystemExit(trace.render())
        finally:
            stop_lab(proc)
    print_results([summary("mdmlab enroll (command, wall)", command, 2000),
                   summary("enrollment flow (in-process, new device)", flow, 50)])


if __name__ == "__main__":
    main()
