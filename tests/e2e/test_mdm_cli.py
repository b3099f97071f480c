"""``mdmlab device ...`` as users run it, against ``mdmlab up`` in a subprocess: devices saved by ``mdmlab enroll``
outlive the command; sync, MDM actions through the console, unenrollment, backup and restore."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_cli import mdmlab, start_lab, stop_lab


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cli-mdm")
    proc = start_lab(state_dir, "--fresh", "--scenario", "auth-oauth2")
    yield state_dir
    if proc.poll() is None:
        stop_lab(proc)


def run(state_dir, *args, code: int = 0):
    result = mdmlab(*args, state_dir=state_dir)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def device_id(lab_dir):
    out = run(lab_dir, "enroll", IDENTIFIER, "--password", PASSWORD)
    match = re.search(r"device id: (LAB[0-9A-F]{8})", out)
    assert match, out
    return match.group(1)


def test_enroll_saves_the_device_and_list_and_show_find_it(lab_dir, device_id):
    assert re.search(rf"{device_id}\s+iPhone\s+26.1\s+BYOD as {IDENTIFIER}", run(lab_dir, "device", "list"))
    shown = run(lab_dir, "device", "show", device_id.lower())
    for text in ("data-separated volume: enrollment", "token: apple-oauth2, refresh token kept",
                 "✓ Calendar", "personal test.mdmlab.chat", "enrolled (BYOD) as eliza@betterbag.test"):
        assert text in shown, shown
    described = json.loads(run(lab_dir, "device", "show", device_id, "--json"))
    assert described["enrollment"]["mode"] == "BYOD" and "access_token" not in json.dumps(described)
    assert PASSWORD not in json.dumps(described)


def test_commands_expiry_and_sync(lab_dir, device_id):
    assert "queued InstallApplication" in run(lab_dir, "device", "command", device_id, "InstallApplication",
                                              "-p", "iTunesStoreID=1660000002", "-p", 'Options={"PurchaseMethod": 1}')
    run(lab_dir, "device", "command", device_id, "EraseDevice")
    assert run(lab_dir, "device", "expire", device_id).strip() == "expired 1 access token(s)"
    trace = json.loads(run(lab_dir, "device", "sync", device_id, "--json", code=1))
    assert trace["outcome"] == "commands-failed" and trace["commands_failed"] == 1  # EraseDevice, under UE
    actions = [s["action"] for s in trace["steps"]]
    assert any("(refresh_token) → 200" in a for a in actions), actions
    listing = run(lab_dir, "device", "commands", device_id)
    assert re.search(r"InstallApplication\s+Acknowledged", listing)
    assert re.search(r"EraseDevice\s+Error\s+MCMDMErrorDomain 12021: “EraseDevice” is not a valid request type\.",
                     listing)
    assert "managed  test.mdmlab.work-notes" in run(lab_dir, "device", "show", device_id)


def test_invitation_and_token_lifetime(lab_dir, device_id):
    refused = mdmlab("device", "invite", device_id, state_dir=lab_dir)
    assert refused.returncode == 1 and "personal Apple Account cannot accept" in refused.stdout
    assert run(lab_dir, "device", "invite", device_id, "--account", "managed").startswith("accepted")
    assert run(lab_dir, "device", "token-lifetime", "900").strip() == "access tokens live 900 s"
    assert run(lab_dir, "device", "token-lifetime").strip() == "access tokens live 900 s"
    run(lab_dir, "device", "token-lifetime", "3600")


def test_revocation_needs_the_person_then_the_mdm_removes_the_enrollment(lab_dir, device_id):
    backup_id = run(lab_dir, "device", "backup", device_id).strip()
    assert backup_id.startswith(device_id + "-")
    assert run(lab_dir, "device", "revoke", device_id).strip() == "revoked 1 grant(s)"
    waiting = json.loads(run(lab_dir, "device", "sync", device_id, "--json", code=1))
    assert waiting["diagnosis"] == "reauth-needs-user"
    assert "SYNCED" in run(lab_dir, "device", "sync", device_id, "--password", PASSWORD)
    assert "queued RemoveProfile" in run(lab_dir, "device", "remove", device_id)
    assert "UNENROLLED" in run(lab_dir, "device", "sync", device_id)
    shown = run(lab_dir, "device", "show", device_id)
    assert "enrollment: none" in shown and "keys erased (unreadable)" in shown
    assert "test.mdmlab.work-notes" not in shown
    failed = mdmlab("device", "command", device_id, "ProfileList", state_dir=lab_dir)
    assert failed.returncode == 1 and "is not enrolled" in failed.stderr

    assert "ENROLLED" in run(lab_dir, "device", "enroll", device_id, IDENTIFIER, "--password", PASSWORD)
    assert "UNENROLLED" in run(lab_dir, "device", "unenroll", device_id)
    restored = run(lab_dir, "device", "restore", device_id, backup_id)
    assert "personal data is back" in restored
    described = json.loads(run(lab_dir, "device", "show", device_id, "--json"))
    assert described["enrollment"] is None
    assert described["personal"]["notes"] == ["Holiday packing list"]
    assert [a["bundle_id"] for a in described["apps"]] == ["test.mdmlab.chat"]


def test_unknown_devices_and_backups_are_one_line_errors(lab_dir, device_id):
    result = mdmlab("device", "show", "NOPE", state_dir=lab_dir)
    assert result.returncode == 1 and "no single device matches 'NOPE'" in result.stderr
    result = mdmlab("device", "restore", device_id, "NOPE", state_dir=lab_dir)
    assert result.returncode == 1 and "no backup 'NOPE'" in result.stderr
