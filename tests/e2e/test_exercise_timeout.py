"""Exercise 7 (a long spinner): the briefing's reproduce step fails as the ticket's phone did, through the lab's real
DNS and TLS, and `mdmlab exercise check` grades with the ticket's device (its 1-second limit)."""
from __future__ import annotations

import re
import shlex

import pytest

from lab import exercises
from lab.launcher import Lab
from lab.scenario import load
from tests.e2e.test_cli import mdmlab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("slow-well-known"), tmp_path_factory.mktemp("exercise") / "ex", fresh=True, exercise=7) as running:
        yield running


def briefing_command() -> list[str]:
    """The `mdmlab enroll` command of exercise 7's briefing, as printed."""
    text = exercises.find(7).briefing()
    command = re.search(r"`time mdmlab (enroll [^`]+)`", text.replace("\n  ", " "))
    assert command, text
    return shlex.split(command.group(1))


def test_the_briefings_reproduce_step_fails_like_the_ticket_until_the_fix(lab):
    reproduced = mdmlab(*briefing_command(), state_dir=lab.state_dir)
    assert reproduced.returncode == 1 and "FAILED" in reproduced.stdout, reproduced.stdout
    assert "Stage 1 · discovery" in reproduced.stdout and "ENROLLED" not in reproduced.stdout

    broken = mdmlab("exercise", "check", state_dir=lab.state_dir)
    assert broken.returncode == 1 and "still fails at discovery" in broken.stdout, broken.stdout

    assert mdmlab("fault", "clear", "slow-response", state_dir=lab.state_dir).returncode == 0
    fixed = mdmlab(*briefing_command(), state_dir=lab.state_dir)
    assert fixed.returncode == 0 and "ENROLLED" in fixed.stdout, fixed.stdout
    repaired = mdmlab("exercise", "check", state_dir=lab.state_dir)
    assert repaired.returncode == 0 and "repaired" in repaired.stdout, repaired.stdout
