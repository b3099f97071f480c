"""`mdmlab exercise check` with another OS version than the ticket's, through the lab's real DNS and TLS: in exercise
1 an iOS 26.1 device takes the ABM/ASM fallback, which is the device's doing, not a change of the trainee's."""
from __future__ import annotations

import pytest

from lab.launcher import Lab
from lab.scenario import load
from tests.e2e.test_cli import mdmlab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("well-known-404-ios17"), tmp_path_factory.mktemp("exercise") / "ex", fresh=True,
             exercise=1) as running:
        yield running


def test_a_newer_os_takes_another_route_and_the_check_says_so_without_blaming_a_change(lab):
    other = mdmlab("exercise", "check", "--os-version", "26.1", state_dir=lab.state_dir)
    assert other.returncode == 1, other.stdout + other.stderr
    assert "enroll the ticket's device: --os-version 17.5" in other.stdout
    assert "undo the change" not in other.stdout and "OS 26.1" in other.stdout

    ticket = mdmlab("exercise", "check", state_dir=lab.state_dir)
    assert ticket.returncode == 1 and "not repaired: a fresh enrollment still fails" in ticket.stdout
