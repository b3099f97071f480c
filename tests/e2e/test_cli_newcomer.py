"""A newcomer's walk through the CLI against one lab started as an instructor might try it first: `--real-device` on
a loopback address with other ports. Every suggested command keeps --state-dir (given explicitly here, so a copied
command reaches this lab and no other); a restart on another port says what the saved device needs; a throttled
sign-in says to wait, not to check the password."""
from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_cli import MDMLAB, START_TIMEOUT, start_lab

LISTEN = "127.0.0.5"


def _discard_port() -> int:
    """A loopback UDP port nothing answers on: the lab's upstream, which these tests never need."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Lab:
    """``mdmlab up --listen 127.0.0.5 --real-device`` on ephemeral ports; what it prints is read as it comes."""

    def __init__(self, state_dir: Path, *extra: str):
        self.dir = state_dir
        self.proc = start_lab(state_dir, "--listen", LISTEN, "--real-device", "--upstream",
                              f"127.0.0.1:{_discard_port()}", *extra)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout],
                                       daemon=True)
        self.reader.start()
        self.banner = ""
        while not self.banner.splitlines() or not self.banner.splitlines()[-1].startswith("warning: HTTPS"):
            try:  # the banner, then the phone instructions: here refused, with the port warnings last
                self.banner += self.lines.get(timeout=START_TIMEOUT if "Stop with Ctrl-C" not in self.banner else 5)
            except queue.Empty:
                break  # no warnings came: the test of the banner says so

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=15) == 0
        self.reader.join(timeout=15)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    running = {"lab": _Lab(tmp_path_factory.mktemp("newcomer"), "--fresh")}
    yield running
    if running["lab"].proc.poll() is None:
        running["lab"].stop()


def run(lab, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    """``mdmlab ARGS --state-dir DIR`` from the repository, where ./.mdmlab is another (the default) state dir."""
    result = subprocess.run([*MDMLAB, *args, "--state-dir", str(lab["lab"].dir)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == code, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def device_id(lab):
    out = run(lab, "enroll", IDENTIFIER, "--password", PASSWORD).stdout
    return re.search(r"device id: (LAB[0-9A-F]{8})", out).group(1)


def test_the_banner_warns_of_ports_and_names_no_address_that_misses_the_lab(lab):
    banner, state_dir = lab["lab"].banner, lab["lab"].dir
    info = json.loads((state_dir / "lab.json").read_text())
    assert "https://localhost:" not in banner  # localhost is 127.0.0.1, not this lab's 127.0.0.5
    assert "no phone instructions: 127.0.0.5 is a loopback address" in banner
    assert f"warning: DNS listens on port {info['dns_port']}, but a phone asks port 53 only" in banner
    assert f"warning: HTTPS listens on port {info['https_port']}, but a phone's first request goes to 443" in banner
    assert f"mdmlab up --real-device --listen <LAN address> --state-dir {state_dir}" in banner
    assert info["real_device"] is True


def test_doctor_fixes_fit_how_the_lab_was_started(lab):
    checks = {c["name"]: c for c in json.loads(run(lab, "doctor", "--json", code=1).stdout)}
    for name, option in (("DNS port", "--dns-port"), ("HTTPS port", "--https-port")):
        fix = checks[name]["fix"]
        assert f"leave {option} out (the lab has --real-device" in fix and "or with --real-device" not in fix, fix
        assert fix.endswith(f"mdmlab up --real-device --listen <LAN address> --state-dir {lab['lab'].dir}"), fix


def test_events_take_the_device_id_that_enroll_printed(lab, device_id):
    shown = json.loads(run(lab, "events", "--device", device_id, "--json", "--last", "500").stdout)
    enrollment_id = json.loads(run(lab, "device", "show", device_id, "--json").stdout)["enrollment"]["enrollment_id"]
    assert shown and {e["enrollment"] for e in shown} == {enrollment_id}
    assert "mdm" in {e["component"] for e in shown}


def test_an_unknown_request_type_is_refused_with_the_nearest_names_unless_raw(lab, device_id):
    refused = run(lab, "device", "command", device_id, "DeviceInfo", code=1)
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "DeviceInformation" in refused.stderr and "--raw" in refused.stderr
    assert "DeviceInfo " not in run(lab, "device", "commands", device_id).stdout  # nothing was queued
    assert "queued DeviceInfo" in run(lab, "device", "command", device_id, "DeviceInfo", "--raw").stdout
    run(lab, "device", "sync", device_id, code=1)  # the device refuses it: the queue is empty again


def test_the_reauthentication_hint_keeps_the_device_and_the_state_dir(lab, device_id):
    run(lab, "device", "revoke", device_id)
    waiting = run(lab, "device", "sync", device_id, code=1)
    assert f"mdmlab device sync {device_id} --password PASSWORD --state-dir {lab['lab'].dir}" in waiting.stderr
    assert "mdmlab device sync --password" not in waiting.stdout
    assert "SYNCED" in run(lab, "device", "sync", device_id, "--password", PASSWORD).stdout


def test_dns_list_shows_how_many_answers_an_override_has_left(lab):
    run(lab, "fault", "set", "dns-servfail", "--times", "2")
    try:
        listing = run(lab, "dns", "list").stdout
    finally:
        run(lab, "fault", "clear")
    assert re.search(r"betterbag\.test\s+\*\s+SERVFAIL\s+\(overridden: fault dns-servfail, 2 more answers\)",
                     listing), listing


def test_a_restart_on_another_https_port_says_what_the_saved_device_needs(lab, device_id):
    old = json.loads((lab["lab"].dir / "lab.json").read_text())["https_port"]
    lab["lab"].stop()
    lab["lab"] = _Lab(lab["lab"].dir)
    banner = lab["lab"].banner
    new = json.loads((lab["lab"].dir / "lab.json").read_text())["https_port"]
    assert new != old
    assert f"warning: 1 saved device(s) ({device_id}) were enrolled with this lab on HTTPS port {old}, not {new}" \
        in banner
    moved = run(lab, "device", "sync", device_id, code=1)
    line = moved.stderr.strip()
    assert len(line.splitlines()) == 1 and f"HTTPS on port {old}" in line and f"now serves on {new}" in line
    assert f"'mdmlab up --https-port {old} --state-dir {lab['lab'].dir}'" in line
    assert f"'mdmlab device enroll {device_id} {IDENTIFIER} --state-dir {lab['lab'].dir}'" in line
    # signing out works without the old port (the device removes the enrollment itself), then it enrolls again
    assert "UNENROLLED" in run(lab, "device", "unenroll", device_id).stdout
    assert "ENROLLED" in run(lab, "device", "enroll", device_id, IDENTIFIER, "--password", PASSWORD).stdout
    assert "SYNCED" in run(lab, "device", "sync", device_id).stdout


def test_a_throttled_sign_in_says_to_wait_not_to_check_the_password(lab):
    """Last: it throttles the scenario's one account for a minute."""
    for _ in range(5):
        wrong = json.loads(run(lab, "enroll", IDENTIFIER, "--password", "guess", "--json", code=1).stdout)
        assert wrong["diagnosis"] == "sign-in-refused"
    throttled = json.loads(run(lab, "enroll", IDENTIFIER, "--password", PASSWORD, "--json", code=1).stdout)
    assert throttled["diagnosis"] == "sign-in-throttled"
    assert re.search(r"wait \d+ seconds", throttled["explanation"]), throttled["explanation"]
    assert "check the account name and password" not in throttled["explanation"]


def test_a_dns_port_in_use_is_one_plain_line_with_the_fix(tmp_path):
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        result = subprocess.run([*MDMLAB, "up", "--state-dir", str(tmp_path / "s"), "--https-port", "0",
                                 "--dns-port", str(port)], capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[Errno" not in lines[0], lines
    assert f"port {port}" in lines[0] and "--dns-port" in lines[0], lines
