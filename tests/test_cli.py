"""The mdmlab command in-process (click's CliRunner), against a lab of this module on ephemeral ports; the
subprocess tests in tests/e2e/test_cli.py run it as users do."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.cli import main
from lab.cli.fault import catalogue, fault_table
from lab.device import FAMILIES
from tests.conftest import IDENTIFIER, PASSWORD

CLI = Path(__file__).resolve().parent.parent / "lab" / "cli"


@pytest.fixture(scope="module")
def cli():
    def invoke(*args: str, code: int = 0):
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result
    return invoke


def test_every_group_is_registered(cli):
    listed = cli("--help").output
    for name in ("up", "enroll", "probe", "fault", "dns", "scenario", "device", "events", "ca", "fleet"):
        assert re.search(rf"^\s+{name}\b", listed, re.M), name


def test_model_family_choices_are_the_devices_families(cli):
    assert f"[{'|'.join(FAMILIES)}]" in cli("enroll", "--help").output
    assert f"[{'|'.join(FAMILIES)}]" in cli("probe", "--help").output


def test_the_cli_imports_no_mock_and_its_modules_form_no_cycle():
    graph = {}
    for path in CLI.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert not any(m == "mocks" or m.startswith("mocks.") for m in imported), path.name
        graph[f"lab.cli.{path.stem}"] = {m for m in imported if m.startswith("lab.cli.")}
    done = set()

    def visit(module, stack):
        assert module not in stack, " → ".join([*stack, module])
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, [*stack, module])
        done.add(module)
    for module in graph:
        visit(module, [])


def test_fault_table_and_offline_list_come_from_the_launchers_catalogue(cli, tmp_path):
    names = [f["name"] for f in catalogue()]
    assert len(names) > 20 and "well-known-404" in names
    assert fault_table().count("\n| `") == len(names)
    listed = json.loads(cli("fault", "list", "--json", "--state-dir", str(tmp_path), code=1).stdout)
    assert [f["name"] for f in listed["catalogue"]] == names and listed["armed"] == []


def test_enroll_then_the_lab_shows_it(cli, lab):
    state = str(lab.state_dir)
    out = cli("enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir", state).output
    assert "ENROLLED" in out
    device_id = re.search(r"device id: (LAB[0-9A-F]{8})", out).group(1)
    assert device_id in cli("device", "list", "--state-dir", state).output
    assert re.search(r"\bdevice\s+.*\bcheck-in\b", cli("events", "--state-dir", state, "--last", "200").output)


def test_fault_set_list_clear_through_the_console(cli, lab):
    state = str(lab.state_dir)
    assert "armed well-known-404 on betterbag.test" in cli("fault", "set", "well-known-404", "--state-dir",
                                                           state).output
    assert "[armed on betterbag.test]" in cli("fault", "list", "--state-dir", state).output
    assert cli("fault", "clear", "--state-dir", state).output.strip() == "cleared 1 fault(s)"
    refused = cli("fault", "set", "no-such-fault", "--state-dir", state, code=1).output
    assert "no-such-fault" in refused and len(refused.strip().splitlines()) == 1
    assert f"'mdmlab fault list --state-dir {state}'" in refused
    cli("fault", "set", "slow-response", "--seconds", "2.5", "--times", "3", "--state-dir", state)
    assert "[armed on betterbag.test ×3 +2.5s]" in cli("fault", "list", "--state-dir", state).output
    cli("fault", "clear", "--state-dir", state)


def test_dns_records_round_trip(cli, lab):
    state = str(lab.state_dir)
    cli("dns", "add", "extra.betterbag.test", "A", "127.0.0.9", "--state-dir", state)
    assert re.search(r"extra\.betterbag\.test\s+A\s+127\.0\.0\.9", cli("dns", "list", "--state-dir", state).output)
    assert "removed 1 record(s)" in cli("dns", "remove", "extra.betterbag.test", "A", "--state-dir", state).output


def test_ca_export_is_the_labs_ca(cli, lab, tmp_path):
    out = tmp_path / "ca.pem"
    cli("ca", "export", "-o", str(out), "--state-dir", str(lab.state_dir))
    assert out.read_bytes() == lab.pki.cert_path.read_bytes()


def test_scenario_list_names_every_scenario(cli):
    from lab.scenario import available

    rows = json.loads(cli("scenario", "list", "--json").output)
    assert [r["name"] for r in rows] == list(available())


def test_enroll_brings_apps_the_person_installed_and_knows_another_mdm(cli, lab):
    state = str(lab.state_dir)
    out = cli("enroll", IDENTIFIER, "--password", PASSWORD, "--app", "com.example.notes", "--app", "test.mdmlab.chat",
              "--state-dir", state).output
    device_id = re.search(r"device id: (LAB[0-9A-F]{8})", out).group(1)
    shown = json.loads(cli("device", "show", device_id, "--json", "--state-dir", state).output)
    assert {"com.example.notes", "test.mdmlab.chat"} <= {a["bundle_id"] for a in shown["apps"] if not a["managed"]}
    managed = cli("enroll", IDENTIFIER, "--password", PASSWORD, "--managed-by", "Old MDM", "--state-dir", state,
                  code=1).output
    assert "already-managed" in managed and "Old MDM" in managed
    refused = cli("enroll", IDENTIFIER, "--app", "notes", "--state-dir", state, code=2).output
    assert "--app" in refused and "bundle identifier" in refused


# -- the newcomer's mistakes (issue 11 §3) ------------------------------------------------------------------------

def test_probe_finds_the_running_lab_like_every_command(cli, lab):
    out = cli("probe", IDENTIFIER, "--state-dir", str(lab.state_dir)).output
    assert "probing through the running lab" in out and "PROBE OK" in out


def test_probe_names_the_system_resolver_when_it_fails(monkeypatch):
    import socket

    from lab.probe import probe

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    trace = probe("someone@example.com")
    assert trace.diagnosis == "dns-timeout"
    assert "asked the system resolver (" in trace.explanation and "offline" in trace.explanation
    assert "create the record" not in trace.explanation


def test_banner_try_line_names_a_state_dir_that_is_not_the_default(lab):
    from lab.cli.up import banner

    assert f"--state-dir {lab.state_dir}" in banner(lab)


def test_documented_device_commands_work_and_sync_says_what_failed(cli, lab):
    state = str(lab.state_dir)
    out = cli("enroll", IDENTIFIER, "--password", PASSWORD, "--state-dir", state).output
    device_id = re.search(r"device id: (LAB[0-9A-F]{8})", out).group(1)
    queued = cli("device", "command", device_id, "DeviceInformation", "--state-dir", state).output
    assert "defaults: Queries=" in queued and f"mdmlab device sync {device_id} --state-dir {state}" in queued
    cli("device", "command", device_id, "InstallApplication", "-p", "iTunesStoreID=1660000002", "--state-dir", state)
    cli("device", "command", device_id, "DeviceInformation", "-p", "Queries=OSVersion", "-p", "Queries=ModelName",
        "--state-dir", state)
    cli("device", "command", device_id, "NoSuchCommand", "--raw", "--state-dir", state)
    synced = cli("device", "sync", device_id, "--state-dir", state, code=1).output
    assert "1 of 4 command(s) failed: NoSuchCommand → Error" in synced
    assert "SYNCED" not in synced and "COMMANDS-FAILED" in synced  # the trace's verdict says it too
    listing = cli("device", "commands", device_id, "--state-dir", state).output
    assert re.search(r"InstallApplication\s+Acknowledged", listing), listing
    assert listing.count("DeviceInformation        Acknowledged") == 2, listing
    assert 'response: {"QueryResponses": {"ModelName": "iPhone", "OSVersion": "26.1"}}' in listing
    assert "MCMDMErrorDomain 12021" in listing


def test_a_state_dir_that_does_not_exist_is_an_error_and_is_not_created(cli, tmp_path):
    missing = tmp_path / "no-such-dir"
    out = cli("device", "list", "--state-dir", str(missing), code=2).output
    assert "is not a directory" in out and not missing.exists()


def test_read_only_device_commands_create_no_state_and_name_the_state_dir(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = cli("device", "list", "--state-dir", str(empty)).output
    assert f"'mdmlab enroll IDENTIFIER --state-dir {empty}'" in listed
    shown = cli("device", "show", "LAB00000000", "--state-dir", str(empty), code=1).output
    assert f"'mdmlab enroll IDENTIFIER --state-dir {empty}'" in shown and len(shown.strip().splitlines()) == 1
    assert list(empty.iterdir()) == []


def test_a_missing_lab_is_started_with_the_state_dir_it_was_looked_for_in(cli, tmp_path):
    out = cli("events", "--state-dir", str(tmp_path), code=1).output
    assert f"start one with 'mdmlab up --state-dir {tmp_path}'" in out


def test_fault_list_without_a_lab_lists_the_catalogue_but_fails(cli, tmp_path):
    out = cli("fault", "list", "--state-dir", str(tmp_path), code=1).output
    assert "well-known-404" in out and "no running lab" in out


def test_unknown_filter_values_and_typos_are_errors_that_suggest(cli, lab):
    state = str(lab.state_dir)
    assert "'bogus' is not one of" in cli("events", "--kind", "bogus", "--state-dir", state, code=2).output
    typo = cli("fault", "set", "well-known-40", "--state-dir", state, code=1).output
    assert "did you mean well-known-404" in typo and "/api/faults" not in typo
    assert "takes no delay" in cli("fault", "set", "well-known-404", "--seconds", "3", "--state-dir", state,
                                   code=2).output
    scenario = cli("scenario", "run", "betterbg", code=1).output
    assert "did you mean betterbag" in scenario and len(scenario) < 200
    assert "numbered 1 to" in cli("scenario", "run", "--exercise", "99", code=1).output


def test_dns_remove_says_when_it_removes_a_verification_record(cli, lab):
    state = str(lab.state_dir)
    listed = cli("dns", "list", "--state-dir", state).output
    value = re.search(r"betterbag\.test\s+TXT\s+(\S+)", listed).group(1)
    out = cli("dns", "remove", "betterbag.test", "TXT", "--state-dir", state).output
    try:
        assert f"betterbag.test TXT {value}" in out and "domain-verification record" in out
        assert f"mdmlab dns add betterbag.test TXT '{value}' --state-dir {state}" in out
    finally:
        cli("dns", "add", "betterbag.test", "TXT", value, "--state-dir", state)


def test_events_hide_the_consoles_own_requests_unless_asked(cli, lab):
    state = str(lab.state_dir)
    cli("dns", "list", "--state-dir", state)
    shown = json.loads(cli("events", "--json", "--last", "200", "--state-dir", state).output)
    assert shown and not any(e["component"] == "console" and e["kind"] == "http" for e in shown)
    everything = json.loads(cli("events", "--json", "--all", "--last", "200", "--state-dir", state).output)
    assert any(e["component"] == "console" and e["path"] == "/api/dns/records" for e in everything)


def test_dns_and_scenario_list_have_help(cli):
    assert "The zone's records" in cli("dns", "list", "--help").output
    assert "expected outcome" in cli("scenario", "list", "--help").output
    assert "The zone's records" in cli("dns", "--help").output


def test_fleet_reports_the_concurrency_it_used_and_unambiguous_rows(cli, lab):
    out = cli("fleet", "-n", "2", "-c", "1000", "--state-dir", str(lab.state_dir)).output
    assert "(concurrency 2;" in out
    assert "stage check-in" in out and "total: device (wall)" in out and "+ check-in" not in out
