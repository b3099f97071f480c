"""A lab killed with -9 leaves its lab.json behind: every command checks the lab's process first and says the lab
is not running, in one line, instead of timing out on its DNS."""
from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_cli import mdmlab, start_lab


@pytest.fixture(scope="module")
def dead_lab(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("dead-lab")
    proc = start_lab(state_dir, "--fresh")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=15)
    assert (state_dir / "lab.json").exists()
    return state_dir


@pytest.mark.parametrize("args", [("enroll", IDENTIFIER, "--password", PASSWORD), ("fault", "set", "dns-nxdomain"),
                                  ("events",), ("dns", "list"), ("ca", "export"), ("fleet", "-n", "1"),
                                  ("doctor",)])
def test_commands_say_the_lab_is_not_running(dead_lab, args):
    result = mdmlab(*args, "--state-dir", str(dead_lab))
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stderr.strip() or result.stdout.strip()
    assert "is not running" in said and "dns-timeout" not in result.stdout, said
    assert f"mdmlab up --state-dir {dead_lab}" in said


def test_doctors_fix_starts_the_same_lab(dead_lab):
    result = mdmlab("doctor", "--json", "--state-dir", str(dead_lab))
    assert result.returncode == 1
    [check] = json.loads(result.stdout)
    assert check["fix"].endswith(f"--state-dir {dead_lab}"), check["fix"]
