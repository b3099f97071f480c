"""Every scenario, run through a lab of its own: its [expect] is judged from the event timeline."""
from __future__ import annotations

import pytest

from lab import runner
from lab.device import Device
from lab.scenario import available, load

SCENARIOS = available()


def test_there_are_at_least_fifteen_field_issue_scenarios_each_with_an_expectation():
    assert len(SCENARIOS) >= 15
    assert all(load(name).expect is not None for name in SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_meets_its_expectation(name):
    result = runner.run(load(name), Device)
    assert result.passed, f"{name}: {result.mismatches}\n{result.trace}"


def test_observe_reads_outcome_and_path_from_the_server_side_of_the_timeline():
    events = [
        {"kind": "http", "component": "abm", "path": runner.WELL_KNOWN_PATH, "status": 302, "summary": ""},
        {"kind": "http", "component": "mdm", "path": "/mdm/checkin", "status": 200, "summary": "",
         "message_type": "TokenUpdate", "outcome": "enrolled", "enrollment": "X"},
        {"kind": "device-outcome", "component": "device", "stage": "check-in", "detail": {"diagnosis": None}},
    ]
    assert runner.observe(events) == {"outcome": "enrolled", "path": "abm", "stage": None, "diagnosis": None}
    # the device claiming success is not enough: without the MDM's TokenUpdate the run failed
    assert runner.observe(events[:1] + events[2:])["outcome"] == "failed"
    # the judgement reads the event's outcome field, never its summary text
    prose = [events[0], {**events[1], "summary": "TokenUpdate X", "outcome": None}, events[2]]
    assert runner.observe(prose)["outcome"] == "failed"
    device_says = {"kind": "device-outcome", "component": "device", "stage": "check-in", "outcome": "enrolled",
                   "detail": {"diagnosis": None}}
    assert runner.observe(events[:1] + [device_says])["outcome"] == "failed"
    # an enrollment the device removed again (a refused Managed Apple Account sign-in) is not an enrollment
    check_out = {**events[1], "message_type": "CheckOut", "outcome": None}
    refused = {"kind": "device-outcome", "component": "device", "stage": "enrollment",
               "detail": {"diagnosis": "maa-account-not-found"}}
    assert runner.observe([events[1], check_out, refused]) == {
        "outcome": "failed", "path": "direct", "stage": "enrollment", "diagnosis": "maa-account-not-found"}


def test_required_examples_of_the_discovery_issue():
    fallback = runner.run(load("well-known-404-abm-fallback"), Device)
    assert fallback.observed["outcome"] == "enrolled" and fallback.observed["path"] == "abm"
    assert any("ABM" in step["explanation"] for step in fallback.trace["steps"])

    old = runner.run(load("well-known-404-ios17"), Device)
    assert (old.observed["outcome"], old.observed["stage"]) == ("failed", "discovery")
    assert "no ABM/ASM fallback" in old.trace["explanation"]

    unverified = runner.run(load("domain-not-verified"), Device)
    assert unverified.observed["diagnosis"] == "abm-domain-not-verified"
    assert "not verified the domain betterbag.test" in unverified.trace["explanation"]
