"""Time from launching `mdmlab up` to a lab that answers: lab.json written and the console answers over TLS."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import print_results, start_lab, stop_lab, summary  # noqa: E402

RUNS = 10


def ready_ms(state_dir: Path, fresh: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = start_lab(state_dir, *(["--fresh"] if fresh else []))
    file_ms = (time.perf_counter() - t0) * 1000
    info = json.loads((state_dir / "lab.json").read_text())
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if session.get(f"https://localhost:{info['https_port']}/api/health", verify=info["ca_cert"],
                           timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.002)
    total_ms = (time.perf_counter() - t0) * 1000
    session.close()
    stop_lab(proc)
    return file_ms, total_ms


def main() -> None:
    fresh, resumed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        for _ in range(RUNS):
            fresh.append(ready_ms(state_dir, fresh=True)[1])
            resumed.append(ready_ms(state_dir, fresh=False)[1])
    print_results([summary("mdmlab up --fresh → ready (new CA)", fresh, 500),
                   summary("mdmlab up → ready (resumed state)", resumed, 500)])


if __name__ == "__main__":
    main()
