"""mdmlab fleet: many devices enroll and check in at once through the real DNS and TLS listener."""
from __future__ import annotations

import json
import stat

import pytest

from lab import fleet
from lab.fleet import FleetError, Journal, Target, assign_models, parse_mix, percentile
from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_cli import mdmlab, start_lab, stop_lab

# -- the mix and the summary's arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (None, {"iPhone": 100}),
    ("iPhone=70,Mac=30", {"iPhone": 70, "Mac": 30}),
    (" iPad=1 , Vision=3 ", {"iPad": 1, "Vision": 3}),
])
def test_mix_parses(text, expected):
    assert parse_mix(text) == expected


@pytest.mark.parametrize("text", ["iPhone", "iPhone=0", "Android=5", "iPhone=-1", "iPhone=1,iPhone=2", "Mac=x"])
def test_bad_mix_is_refused_in_one_line(text):
    with pytest.raises(FleetError) as exc:
        parse_mix(text)
    assert "\n" not in str(exc.value)


def test_models_follow_the_mix_exactly_and_interleaved():
    models = assign_models(100, {"iPhone": 70, "Mac": 30})
    assert models.count("iPhone") == 70 and models.count("Mac") == 30
    first_ten = models[:10]
    assert first_ten.count("Mac") == 3  # every prefix stays close to the mix, no block of Macs at the end


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99), percentile(values, 100)) \
        == (50, 95, 99, 100)
    assert percentile([7.0], 99) == 7.0


# -- in-process, against the module's lab ------------------------------------------------------------------------

@pytest.fixture
def target(lab) -> Target:
    return Target.from_info(lab.describe(), [(IDENTIFIER, PASSWORD)])


def test_fleet_enrolls_and_checks_in_every_device_once(lab, target, tmp_path):
    before = {e["enrollment_id"] for e in lab.mdm.enrollments()}
    report = fleet.run(target, 24, 6, {"iPhone": 2, "Mac": 1}, journal=tmp_path / "journal")
    assert (report.enrolled, report.failed, report.errors) == (24, 0, {})
    assert report.models == {"iPhone": 16, "Mac": 8}
    summary = report.to_dict()
    for stage in ("discovery", "authentication", "enrollment", "check-in", "commands"):
        lat = summary["stages"][stage]
        assert lat["count"] == 24 and 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    records = Journal.read(tmp_path / "journal")
    assert len(records) == 24 and len({r["enrollment_id"] for r in records}) == 24
    after = {e["enrollment_id"]: e for e in lab.mdm.enrollments()}
    new = set(after) - before
    assert new == {r["enrollment_id"] for r in records}  # none lost, none extra
    assert {after[i]["status"] for i in new} == {"enrolled"}
    assert stat.S_IMODE((tmp_path / "journal").stat().st_mode) == 0o600  # it holds the devices' tokens


def test_journaled_devices_check_in_again_with_their_tokens(lab, target, tmp_path):
    fleet.run(target, 4, 4, journal=tmp_path / "journal")
    result = fleet.recheck(target, Journal.read(tmp_path / "journal"))
    assert (result.checked, result.ok, result.failures) == (4, 4, {})


def test_errors_are_counted_by_cause_and_the_others_still_enroll(lab, tmp_path):
    mixed = Target.from_info(lab.describe(), [(IDENTIFIER, PASSWORD), (IDENTIFIER, "not-the-password")])
    report = fleet.run(mixed, 10, 5)
    assert (report.enrolled, report.failed) == (5, 5)
    assert report.errors == {"sign-in-refused": 5}
    assert report.errors_by_stage == {"authentication": 5}
    assert "5  sign-in-refused" in report.render()


def test_fleet_reaches_a_lab_by_its_console_url(lab):
    url = f"https://localhost:{lab.https_port}/"
    target = fleet.target_from_url(url, str(lab.pki.cert_path), [(IDENTIFIER, PASSWORD)])
    assert target.network.https_port == lab.https_port and target.network.dns_port == lab.dns.port
    report = fleet.run(target, 3, 3)
    assert (report.enrolled, report.failed) == (3, 0)


def test_a_url_that_is_no_lab_is_refused_in_one_line(lab, tmp_path):
    from tests.e2e.test_crash import free_port

    with pytest.raises(FleetError, match="cannot read the lab's health"):
        fleet.target_from_url(f"https://localhost:{free_port()}/", str(lab.pki.cert_path))
    with pytest.raises(FleetError, match="console URL"):
        fleet.target_from_url("http://localhost/", str(lab.pki.cert_path))


def test_users_default_to_the_scenario_with_their_passwords(lab):
    target = Target.from_info(lab.describe())
    assert (IDENTIFIER, PASSWORD) in target.users


# -- the command, as users run it --------------------------------------------------------------------------------

def test_fleet_against_a_lab_started_from_a_scenario_file_uses_that_files_users(tmp_path):
    """ROBUSTNESS F24: lab.json recorded only the scenario's name, so fleet found no account to sign in with."""
    scenario = tmp_path / "elsewhere.toml"
    scenario.write_text("""
[scenario]
name = "fleet-from-a-file"
[organization]
name = "Elsewhere"
[[domains]]
name = "elsewhere.test"
version = "mdm-byod"
[[users]]
identifier = "zoe@elsewhere.test"
password = "only-in-this-file-2026"
""")
    state_dir = tmp_path / "lab"
    proc = start_lab(state_dir, "--fresh", "--scenario", str(scenario))
    try:
        result = mdmlab("fleet", "-n", "4", "-c", "2", "--json", "--journal", str(tmp_path / "journal"),
                        state_dir=state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (json.loads(result.stdout)["enrolled"], json.loads(result.stdout)["failed"]) == (4, 0)
    finally:
        stop_lab(proc)


def test_fleet_command_50_devices_at_concurrency_8(tmp_path):
    state_dir = tmp_path / "lab"
    proc = start_lab(state_dir, "--fresh")
    try:
        result = mdmlab("fleet", "--devices", "50", "--concurrency", "8", "--mix", "iPhone=70,Mac=30", "--json",
                        "--journal", str(tmp_path / "journal"), state_dir=state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        assert (summary["enrolled"], summary["failed"], summary["errors"]) == (50, 0, {})
        assert summary["models"] == {"iPhone": 35, "Mac": 15}
        assert summary["enrollments_per_s"] > 0
        assert set(summary["stages"]) >= {"discovery", "authentication", "enrollment", "check-in", "commands"}
        assert "enrolling 50 devices" in result.stderr  # the progress bar (a plain line when not a terminal)
        again = mdmlab("fleet", "--recheck", str(tmp_path / "journal"), state_dir=state_dir)
        assert again.returncode == 0 and "50 of 50 devices checked in again" in again.stdout
        text = mdmlab("fleet", "-n", "2", "-c", "2", "--user", f"{IDENTIFIER}:wrong", state_dir=state_dir)
        assert text.returncode == 1
        assert "0 of 2 devices enrolled" in text.stdout and "2  sign-in-refused" in text.stdout
    finally:
        stop_lab(proc)


@pytest.mark.parametrize("args, message", [
    (["--mix", "Android=3"], "--mix"),
    (["--user", "nobody"], "IDENTIFIER:PASSWORD"),
    (["--devices", "0"], "--devices"),
])
def test_fleet_command_refuses_bad_options_in_one_line(tmp_path, args, message):
    result = mdmlab("fleet", *args, "--state-dir", str(tmp_path))
    assert result.returncode in (1, 2)
    assert message in result.stderr


def test_fleet_without_a_running_lab_says_so(tmp_path):
    result = mdmlab("fleet", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no running lab" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- the same devices as Locust users (local mode) ---------------------------------------------------------------

def test_locust_runs_the_fleet_device_as_users_in_local_mode(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    state_dir = tmp_path / "lab"
    proc = start_lab(state_dir, "--fresh")
    try:
        info = json.loads((state_dir / "lab.json").read_text())
        locustfile = Path(__file__).resolve().parents[2] / "benchmarks" / "locust" / "locustfile.py"
        env = {**os.environ, "MDMLAB_CA": info["ca_cert"], "MDMLAB_MIX": "iPhone=1,Mac=1",
               "MDMLAB_USERS": f"{IDENTIFIER}:{PASSWORD}"}
        result = subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "3",
                                 "-r", "3", "--run-time", "2s", "--stop-timeout", "20", "--only-summary", "--json",
                                 "--host", f"https://localhost:{info['https_port']}/"],
                                capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        stats = {(s["method"], s["name"]): s for s in json.loads(result.stdout)}
        devices = stats[("device", "enroll+check-in")]
        assert devices["num_requests"] >= 1 and devices["num_failures"] == 0
        for stage in ("discovery", "authentication", "enrollment", "check-in", "commands"):
            assert stats[("stage", stage)]["num_requests"] == devices["num_requests"]
    finally:
        stop_lab(proc)
