"""Grading an exercise end to end: `mdmlab exercise start/check` through the lab's real DNS and TLS.

Exercise 12 (ABM's default assignment) is repaired in ABM while the organization's domain stays as it is: clearing
the lab's fault by name makes the device enroll, but by the wrong route, and does not count. Every attempt is an
event in the timeline; nothing printed names the scenario.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lab.net import LabResolver, lab_session
from tests.e2e.test_cli import MDMLAB, mdmlab, stop_lab

NUMBER = 12
SCENARIO = "no-default-assignment"


def start_exercise(number: int, state_dir: Path, *args: str, **popen) -> subprocess.Popen:
    """`mdmlab exercise start NUMBER ARGS` on ephemeral ports, once its lab.json is in ``state_dir``."""
    proc = subprocess.Popen([*MDMLAB, "exercise", "start", str(number), *args, "--https-port", "0", "--dns-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    deadline = time.monotonic() + 30
    while not (state_dir / "lab.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mdmlab exercise start did not start: " + "\n".join(proc.communicate(timeout=5)))
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def exercise(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("exercise") / "ex"
    proc = start_exercise(NUMBER, state_dir, "--state-dir", str(state_dir))
    yield state_dir, proc
    if proc.poll() is None:
        stop_lab(proc)


def check(state_dir: Path) -> subprocess.CompletedProcess:
    return mdmlab("exercise", "check", state_dir=state_dir)


def test_an_attempt_is_graded_by_route_and_recorded_and_clearing_the_fault_by_name_does_not_count(exercise):
    state_dir, proc = exercise
    info = json.loads((state_dir / "lab.json").read_text())
    assert info["exercise"] == NUMBER and info["scenario"] == f"exercise {NUMBER}"

    broken = check(state_dir)
    assert broken.returncode == 1 and "not repaired: a fresh enrollment still fails at discovery" in broken.stdout

    assert mdmlab("fault", "clear", "well-known-404", state_dir=state_dir).returncode == 0
    shortcut = check(state_dir)
    assert shortcut.returncode == 1, shortcut.stdout + shortcut.stderr
    assert "not repaired the way this exercise intends" in shortcut.stdout
    # in an exercise the faults are the instructor's: the trainee cannot arm one again, a reset restores them
    assert mdmlab("fault", "set", "well-known-404", "--host", "betterbag.test", state_dir=state_dir).returncode == 1

    # the intended repair: ABM's Default Device Assignment for iPhones, on the admin site, through DNS and TLS
    session = lab_session(LabResolver(info["dns_address"], info["dns_port"]), info["ca_cert"])
    admin = f"https://{info['abm']['admin']}:{info['https_port']}"
    try:
        console = info["console_url"].rstrip("/")
        assert session.post(f"{console}/api/reset", timeout=30).status_code == 200
        page = session.get(f"{admin}/", timeout=10).text  # as a browser does: the form carries the CSRF token
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        response = session.post(f"{admin}/assignments", data={"iPhone": "BetterBag MDM", "Mac": "BetterBag MDM",
                                                              "csrf_token": token},
                                headers={"Origin": admin}, timeout=10)
        assert response.status_code < 400, response.text[:300]
        repaired = check(state_dir)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert repaired.stdout.startswith(f"exercise {NUMBER}: repaired") and "ABM/ASM fallback" in repaired.stdout

        events = session.get(f"{console}/api/events?component=exercise", timeout=10).json()
    finally:
        session.close()
    assert [e["outcome"] for e in events] == ["not-repaired", "not-repaired", "repaired"]
    assert all(e["kind"] == "exercise-attempt" for e in events)
    for output in (broken, shortcut, repaired):
        assert SCENARIO not in output.stdout + output.stderr

    listed = mdmlab("scenario", "list", state_dir=state_dir)
    assert listed.returncode != 0 and "exercise 12 is running" in listed.stderr and SCENARIO not in listed.stdout

    banner = stop_lab(proc)
    assert f"mdmlab is up · exercise {NUMBER} (BetterBag)" in banner and SCENARIO not in banner
    assert f"export MDMLAB_STATE_DIR={state_dir.resolve()}" in banner
    assert f"-p {info['dns_port']}" in banner and "10053" not in banner


def test_check_on_a_lab_that_is_no_exercise_says_so_in_one_line(tmp_path):
    from tests.e2e.test_cli import start_lab

    proc = start_lab(tmp_path / "plain")
    try:
        result = check(tmp_path / "plain")
    finally:
        stop_lab(proc)
    assert result.returncode == 1 and "no exercise" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_exercise_refuses_a_labs_state_dir(tmp_path):
    from tests.e2e.test_cli import start_lab

    stop_lab(start_lab(tmp_path / "mine"))
    ca = (tmp_path / "mine" / "pki" / "ca.pem").read_bytes()
    result = mdmlab("exercise", "start", "1", "--state-dir", str(tmp_path / "mine"), "--https-port", "0",
                    "--dns-port", "0")
    assert result.returncode == 1 and "never overwrites" in result.stderr
    assert (tmp_path / "mine" / "pki" / "ca.pem").read_bytes() == ca
