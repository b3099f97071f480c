"""Running scenarios: start a lab, let the scenario's device enroll, judge the outcome from the timeline.

The launcher builds servers, not clients: the caller hands in the device to run (``lab.device.Device``, or any
class with its constructor, ``enroll`` and ``close``), so this module never imports one.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lab.events import EventLog, device_trace_events
from lab.launcher import Lab
from lab.protocol import WELL_KNOWN_PATH
from lab.scenario import Scenario


@dataclass
class Result:
    scenario: str
    expected: dict
    observed: dict
    mismatches: list[str] = field(default_factory=list)
    trace: dict | None = None
    elapsed_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "passed": self.passed, "expected": self.expected,
                "observed": self.observed, "mismatches": self.mismatches, "elapsed_ms": self.elapsed_ms,
                "trace": self.trace}


def record_trace(events: EventLog, trace, device, identifier: str) -> None:
    """The device's own account of the run, in the timeline."""
    who = f"{device.model_family} {device.os_version} {device.serial}"
    for event in device_trace_events(identifier, trace.to_dict(), who):
        events.record(event)


def observe(events: list[dict]) -> dict:
    """What the timeline shows: the server side decides 'enrolled' and 'via ABM', the device tells the rest.
    Enrolled means the MDM recorded the enrollment (outcome ``enrolled``) and no CheckOut of it followed, as when
    the device removes an enrollment whose Managed Apple Account sign-in Apple refused."""
    live: set = set()
    for e in events:
        if e["kind"] == "http" and e["component"] == "mdm" and e["status"] == 200:
            if e.get("outcome") == "enrolled":
                live.add(e.get("enrollment"))
            elif e.get("message_type") == "CheckOut":
                live.discard(e.get("enrollment"))
    enrolled = bool(live)
    via_abm = any(e["kind"] == "http" and e["component"] == "abm" and e["path"] == WELL_KNOWN_PATH
                  for e in events)
    outcome = next((e for e in reversed(events) if e["kind"] == "device-outcome"), None)
    return {"outcome": "enrolled" if enrolled else "failed", "path": "abm" if via_abm else "direct",
            "stage": None if enrolled or outcome is None else outcome["stage"],
            "diagnosis": None if outcome is None else outcome["detail"]["diagnosis"]}


class EnrollingDevice(Protocol):
    """What the runner needs of the device that ``make_device`` builds (the launcher does not import the device)."""

    def enroll(self, identifier: str, password: str | None = None) -> Any: ...

    def close(self) -> None: ...


def device_for(scenario: Scenario, network, make_device: Callable, *,
               os_version: str | None = None) -> tuple[EnrollingDevice, str, str | None]:
    """The scenario's device (``[device]``), made by ``make_device`` for ``network``; its account and password."""
    setup = scenario.device
    identifier = setup.identifier or scenario.users[0].identifier
    user = scenario.user(identifier)
    password = setup.password or (user.password if user else None)
    device = make_device(network, model_family=setup.model_family, os_version=os_version or setup.os_version,
                         strict=setup.strict, discovery_timeout=setup.discovery_timeout, fallback_on=setup.fallback_on,
                         managed_by=setup.managed_by, virtual_machine=setup.virtual_machine,
                         supervised=setup.supervised,
                         **({} if setup.personal_apps is None else {"personal_apps": setup.personal_apps}))
    return device, identifier, password


def run(scenario: Scenario, make_device: Callable, state_root: Path | None = None) -> Result:
    if scenario.expect is None:
        raise ValueError(f"scenario {scenario.name} has no [expect] table; add one to run it")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mdmlab-scenario-") as tmp:
        root = Path(state_root or tmp)
        with Lab(scenario, root / scenario.name, fresh=True) as lab:
            after = lab.events.last_id()
            device, identifier, password = device_for(scenario, lab.network(), make_device)
            try:
                trace = device.enroll(identifier, password)
            finally:
                device.close()
            record_trace(lab.events, trace, device, identifier)
            observed = observe(lab.events.query(after=after, limit=5000))
    expect = scenario.expect
    expected = {k: v for k, v in (("outcome", expect.outcome), ("stage", expect.stage), ("path", expect.path),
                                  ("diagnosis", expect.diagnosis)) if v is not None}
    mismatches = [f"{key}: expected {value}, observed {observed.get(key)}" for key, value in expected.items()
                  if observed.get(key) != value]
    return Result(scenario.name, expected, observed, mismatches, trace.to_dict(),
                  round((time.perf_counter() - started) * 1000, 1))
