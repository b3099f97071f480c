"""The mdmlab command as users run it: `up` in a subprocess, `enroll` against it, clean stop, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IDENTIFIER, PASSWORD

MDMLAB = [sys.executable, "-m", "lab"]
START_TIMEOUT = 20


def start_lab(state_dir: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([*MDMLAB, "up", "--state-dir", str(state_dir), "--https-port", "0", "--dns-port", "0",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT
    while not (state_dir / "lab.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            pytest.fail(f"mdmlab up did not start: {out}\n{err}")
        time.sleep(0.05)
    return proc


def stop_lab(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    return out


def mdmlab(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if state_dir is not None:
        env["MDMLAB_STATE_DIR"] = str(state_dir)
    return subprocess.run([*MDMLAB, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cli-lab")
    proc = start_lab(state_dir, "--fresh")
    yield state_dir, proc
    if proc.poll() is None:
        stop_lab(proc)


def test_lab_json_tells_other_tools_where_the_lab_is(running):
    state_dir, _ = running
    info = json.loads((state_dir / "lab.json").read_text())
    assert {"dns_port", "https_port", "ca_cert", "hosts"} <= set(info)
    assert {"betterbag.test", "mdm.lab.test", "console.lab.test"} <= set(info["hosts"])
    assert Path(info["ca_cert"]).is_file()


def test_enroll_prints_the_staged_trace_and_exits_zero(running):
    state_dir, _ = running
    result = mdmlab("enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("Stage 1 · discovery", "Stage 2 · authentication", "Stage 3 · enrollment", "Stage 3 · check-in"):
        assert stage in result.stdout
    assert "ENROLLED" in result.stdout


def test_enroll_json_names_every_stage_and_finds_the_lab_through_the_environment(running):
    state_dir, _ = running
    result = mdmlab("enroll", IDENTIFIER, "--password", PASSWORD, "--model-family", "iPad", "--os-version", "17.5",
                    "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert trace["outcome"] == "enrolled"
    assert {s["stage"] for s in trace["steps"]} == {"identifier", "discovery", "authentication", "enrollment",
                                                    "check-in"}
    assert all(isinstance(s["stage_number"], int) for s in trace["steps"])


def test_failed_enrollment_exits_non_zero_with_the_diagnosis(running):
    state_dir, _ = running
    result = mdmlab("enroll", IDENTIFIER, "--password", "wrong", "--json", state_dir=state_dir)
    assert result.returncode == 1
    assert json.loads(result.stdout)["diagnosis"] == "sign-in-refused"


def test_bad_os_version_is_a_one_line_usage_error(running):
    state_dir, _ = running
    result = mdmlab("enroll", IDENTIFIER, "--os-version", "eighteen", state_dir=state_dir)
    assert result.returncode == 2
    assert "--os-version" in result.stderr


def test_enroll_without_a_running_lab_says_so_in_one_line(tmp_path):
    result = mdmlab("enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no running lab" in lines[0]


def test_scenario_with_an_unknown_key_is_refused_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[organization]\nname = "X"\nfavourite_colour = "blue"\n[[domains]]\nname = "x.test"\n')
    result = mdmlab("up", "--scenario", str(bad), "--state-dir", str(tmp_path / "s"), "--https-port", "0",
                    "--dns-port", "0")
    assert result.returncode == 1
    assert "favourite_colour" in result.stderr and str(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_second_lab_on_the_same_state_dir_is_refused(running):
    state_dir, _ = running
    result = mdmlab("up", "--state-dir", str(state_dir), "--https-port", "0", "--dns-port", "0")
    assert result.returncode == 1
    assert "another lab is running" in result.stderr


def test_stop_and_resume_keeps_ca_and_enrollments(tmp_path):
    state_dir = tmp_path / "resume"
    proc = start_lab(state_dir, "--fresh")
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("mdmlab is up")
        result = mdmlab("enroll", IDENTIFIER, "--password", PASSWORD, "--json", state_dir=state_dir)
        assert result.returncode == 0, result.stdout
        enrollment_id = json.loads(result.stdout)["explanation"].rsplit(" ", 1)[1]
    finally:
        out = stop_lab(proc)
    assert "mdmlab stopped." in out
    assert not (state_dir / "lab.json").exists()
    ca_before = (state_dir / "pki" / "ca.pem").read_bytes()
    assert oct((state_dir / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"

    proc = start_lab(state_dir)
    try:
        assert (state_dir / "pki" / "ca.pem").read_bytes() == ca_before
        import sqlite3
        db = sqlite3.connect(state_dir / "mdm" / "mdm.db")
        assert db.execute("SELECT status FROM enrollments WHERE enrollment_id = ?", (enrollment_id,)).fetchone() \
            == ("enrolled",)
        db.close()
        assert mdmlab("enroll", IDENTIFIER, "--password", PASSWORD, state_dir=state_dir).returncode == 0
    finally:
        stop_lab(proc)


def dig(info: dict, name: str, rtype: str) -> list[str]:
    answer = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{info['dns_address']}", "-p",
                             str(info["dns_port"]), name, rtype], capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.split()


def banner_of(proc: subprocess.Popen) -> str:
    lines = []
    while not lines or not lines[-1].startswith("  Stop with Ctrl-C"):
        lines.append(proc.stdout.readline())
        assert lines[-1], "".join(lines)
    return "".join(lines)


def test_dns_changes_and_faults_made_at_run_time_survive_a_restart_and_fresh_forgets_them(tmp_path):
    """ROBUSTNESS F22: a resumed lab is the lab that stopped, not only its scenario."""
    state_dir = tmp_path / "changes"
    proc = start_lab(state_dir, "--fresh")
    try:
        assert "Resumed" not in banner_of(proc)
        info = json.loads((state_dir / "lab.json").read_text())
        assert dig(info, "mdm.lab.test", "A") == ["127.0.0.1"]
        for change in (("dns", "add", "extra.betterbag.test", "A", "127.0.0.9"), ("dns", "remove", "mdm.lab.test", "A"),
                       ("fault", "set", "well-known-404", "--times", "3")):
            result = mdmlab(*change, state_dir=state_dir)
            assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stop_lab(proc)

    proc = start_lab(state_dir)
    try:
        assert "Resumed  2 DNS change(s) and 1 armed fault(s) made while it last ran" in banner_of(proc)
        info = json.loads((state_dir / "lab.json").read_text())
        assert dig(info, "extra.betterbag.test", "A") == ["127.0.0.9"]
        assert dig(info, "mdm.lab.test", "A") == []
        armed = json.loads(mdmlab("fault", "list", "--json", state_dir=state_dir).stdout)
        assert [(f["name"], f["remaining"]) for f in armed["armed"]] == [("well-known-404", 3)], armed["armed"]
        assert mdmlab("fault", "clear", state_dir=state_dir).returncode == 0
    finally:
        stop_lab(proc)

    proc = start_lab(state_dir)
    try:
        assert "Resumed  2 DNS change(s) and 0 armed fault(s)" in banner_of(proc)  # cleared stays cleared
        info = json.loads((state_dir / "lab.json").read_text())
        assert json.loads(mdmlab("fault", "list", "--json", state_dir=state_dir).stdout)["armed"] == []
        assert dig(info, "extra.betterbag.test", "A") == ["127.0.0.9"]
    finally:
        stop_lab(proc)

    proc = start_lab(state_dir, "--fresh")
    try:
        assert "Resumed" not in banner_of(proc)
        info = json.loads((state_dir / "lab.json").read_text())
        assert dig(info, "extra.betterbag.test", "A") == [] and dig(info, "mdm.lab.test", "A") == ["127.0.0.1"]
    finally:
        stop_lab(proc)


def test_enroll_hands_the_devices_steps_to_the_timeline(running):
    import requests

    state_dir, _ = running
    info = json.loads((state_dir / "lab.json").read_text())
    assert mdmlab("enroll", IDENTIFIER, "--password", "wrong", state_dir=state_dir).returncode == 1
    session = requests.Session()
    session.trust_env = False
    events = session.get(f"https://localhost:{info['https_port']}/api/events", params={"kind": "device-outcome"},
                         verify=info["ca_cert"], timeout=5).json()
    assert events[-1]["device"] == IDENTIFIER
    assert events[-1]["detail"]["diagnosis"] == "sign-in-refused"
