"""Where the lab's CPU goes during a fleet run: per thread (from /proc) and per Flask view (thread CPU time).

The lab runs in this process (a ``Lab``, as `mdmlab up` builds it) so its threads and views can be measured; the
fleet runs as `mdmlab fleet` in a subprocess. Concurrency 1 against 8 shows what threads sharing one GIL cost.

    .venv/bin/python benchmarks/breakdown.py --devices 600 --concurrency 8
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, cpu_seconds  # noqa: E402
from lab.launcher import Lab  # noqa: E402
from lab.scenario import load  # noqa: E402


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native id."""
    result = {}
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            result[tid] = cpu_seconds("self", tid)
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return result


def timed_views(lab: Lab, spent: collections.Counter, calls: collections.Counter) -> None:
    def wrap(view, name):
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return view(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - started
                calls[name] += 1
        return timed

    for component, app in {id(a): (c, a) for c, a in lab.dispatcher.apps.values()}.values():
        for endpoint, view in list(app.view_functions.items()):
            app.view_functions[endpoint] = wrap(view, f"{component} {endpoint}")


def fleet(state_dir: Path, devices: int, concurrency: int) -> dict:
    env = {**os.environ, "MDMLAB_STATE_DIR": str(state_dir)}
    out = subprocess.run([sys.executable, "-m", "lab", "fleet", "-n", str(devices), "-c", str(concurrency), "--json"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"mdmlab fleet failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def measure(devices: int, concurrency: int) -> dict:
    spent, calls = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as tmp, Lab(load("betterbag"), Path(tmp) / "state") as lab:
        fleet(lab.state_dir, 20, min(4, concurrency))  # first-use costs out of the figures
        timed_views(lab, spent, calls)
        before, cpu = thread_cpu(), time.process_time()
        report = fleet(lab.state_dir, devices, concurrency)
        after, cpu = thread_cpu(), time.process_time() - cpu
        names = {t.native_id: re.sub(r"[-_ ]?\d+$", "", t.name) for t in threading.enumerate()}
    enrolled = max(1, report["enrolled"])
    threads = collections.Counter()
    for tid, seconds in after.items():
        threads[names.get(tid, "other")] += seconds - before.get(tid, 0.0)
    return {
        "devices": devices, "concurrency": concurrency, "enrolled": report["enrolled"], "failed": report["failed"],
        "enrollments_per_s": report["enrollments_per_s"], "lab_cpu_ms_per_enrollment": round(cpu * 1000 / enrolled, 2),
        "threads_ms_per_enrollment": {k: round(v * 1000 / enrolled, 2) for k, v in threads.most_common() if v},
        "views_ms_per_enrollment": {k: round(v * 1000 / enrolled, 3) for k, v in spent.most_common()},
        "view_calls_per_enrollment": {k: round(v / enrolled, 2) for k, v in calls.most_common()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    result = measure(args.devices, args.concurrency)
    print(f"{result['enrolled']} enrolled, {result['failed']} failed: {result['enrollments_per_s']} enrollments/s, "
          f"lab CPU {result['lab_cpu_ms_per_enrollment']} ms per enrollment")
    for name, ms in result["threads_ms_per_enrollment"].items():
        print(f"  thread {name:<28} {ms:7.2f} ms")
    for name, ms in result["views_ms_per_enrollment"].items():
        print(f"  view   {name:<28} {ms:7.3f} ms  ({result['view_calls_per_enrollment'][name]} calls)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
