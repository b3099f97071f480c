"""mdmlab's fleet device as Locust users: each user enrolls one new simulated device after another, each device
walking the four stages and checking in once (lab.fleet.enroll_one, the same code as `mdmlab fleet`).

Locust reports each stage as a request of type "stage" (its time is what the device waited on the network in it)
and the whole device as "device / enroll+check-in", failed with the device's diagnosis when it did not enroll.

Where the lab is:
  --host https://HOST:PORT/     the lab's console URL (a lab on another machine), with MDMLAB_CA=<its CA file>
                                and, beyond loopback, MDMLAB_ADMIN_TOKEN=<its admin token>
  no --host                     the lab of MDMLAB_STATE_DIR (default ./.mdmlab) on this machine
Accounts: MDMLAB_USERS="id@domain:password,..." [default: the running scenario's]. Mix: MDMLAB_MIX="iPhone=70,Mac=30".

Local:        locust -f benchmarks/locust/locustfile.py --headless -u 16 -r 16 --run-time 30s
Distributed:  locust -f benchmarks/locust/locustfile.py --master --headless -u 400 -r 40 --run-time 2m \\
                     --expect-workers 4 --host https://LAB:8443/
              MDMLAB_CA=ca.pem locust -f benchmarks/locust/locustfile.py --worker --master-host MASTER   (each)
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
from pathlib import Path

from locust import User, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lab import config, fleet  # noqa: E402

_lock = threading.Lock()
_targets: dict[str, fleet.Target] = {}
_counter = itertools.count()


def _users() -> list[tuple[str, str]]:
    users = []
    for item in filter(None, (os.environ.get("MDMLAB_USERS") or "").split(",")):
        identifier, _, password = item.strip().partition(":")
        users.append((identifier, password))
    return users


def target_for(host: str | None) -> fleet.Target:
    """One target per process (worker), built on first use."""
    key = host or ""
    with _lock:
        if key not in _targets:
            if host:
                ca = os.environ.get("MDMLAB_CA") or str(config.state_dir() / "pki" / "ca.pem")
                _targets[key] = fleet.target_from_url(host, ca, _users(), os.environ.get("MDMLAB_ADMIN_TOKEN"))
            else:
                _targets[key] = fleet.target_from_state_dir(config.state_dir(), _users())
        return _targets[key]


MIX = fleet.parse_mix(os.environ.get("MDMLAB_MIX"))
CYCLE = fleet.assign_models(sum(MIX.values()), MIX)  # one round of the mix, repeated


class EnrollingDevice(User):
    wait_time = constant(0)

    @task
    def enroll(self) -> None:
        target = target_for(self.host)
        index = next(_counter)
        result = fleet.enroll_one(target, index, CYCLE[index % len(CYCLE)])
        fire = self.environment.events.request.fire
        for stage, ms in result.stage_ms.items():
            fire(request_type="stage", name=stage, response_time=ms, response_length=0, exception=None, context={})
        failure = None if result.ok else RuntimeError(f"{result.stage or 'device'}: {result.cause}")
        fire(request_type="device", name="enroll+check-in", response_time=result.total_ms, response_length=0,
             exception=failure, context={})
