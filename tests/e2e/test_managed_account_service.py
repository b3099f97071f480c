"""Apple's identity service through the lab's real DNS and TLS: the Managed Apple Account sign-in that completes
an enrollment, with ABM's directory behind it, curl as an outside client, and the fault that takes it down."""
from __future__ import annotations

import json

import pytest

from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run

PATH = "/v1/managed-account/sign-in"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("maa-managed-devices"), tmp_path_factory.mktemp("maa"), fresh=True) as running:
        yield running


def sign_in(lab, session, account=IDENTIFIER, password=PASSWORD, token=None, **device):
    body = {"account": account, "password": password, "maid_token": token,
            "device": {"platform": "iOS", "os_version": "26.1", "enrollment": "user", **device}}
    return session.post(lab.origin(lab.scenario.apple_identity_host) + PATH, json=body, timeout=10)


def test_managed_devices_only_needs_the_mdms_token(lab, session):
    refused = sign_in(lab, session)
    assert refused.status_code == 403 and refused.json()["error"] == "no-maid-token"
    assert "AKAuthenticationError error -7013" in refused.json()["alert"]["message"]
    token = lab.mdm.channel.maid.token(lab.mdm.channel.server_uuid, __import__("time").time())
    accepted = sign_in(lab, session, token=token)
    assert accepted.status_code == 200 and accepted.json()["organization"] == "BetterBag"


def test_the_admin_changes_the_setting_and_removes_the_account_at_run_time(lab, session):
    lab.directory.set_maa_allowed_on("any")
    try:
        assert sign_in(lab, session).status_code == 200
        lab.abm.remove_account(IDENTIFIER)
        gone = sign_in(lab, session)
        assert gone.status_code == 401 and gone.json()["error"] == "account-not-found"
    finally:
        lab.abm.add_account(IDENTIFIER)
        lab.directory.set_maa_allowed_on("managed")


def test_the_timeline_shows_the_sign_in_without_the_password(lab, session):
    sign_in(lab, session, password="hunter2-secret")
    lab.events.flush()
    events = [e for e in lab.events.query(component="apple-id")]
    assert events and all("hunter2-secret" not in json.dumps(e, default=str) for e in events)
    assert any("wrong-password" in e["summary"] for e in events)


def test_curl_gets_a_clear_400_for_a_malformed_request(lab):
    curl = require_tool("curl")
    url = f"https://{lab.scenario.apple_identity_host}{PATH}"
    result = run([curl, "-s", "-w", "\n%{http_code}", "--connect-to", f"::127.0.0.1:{lab.https_port}",
                  "--cacert", str(lab.pki.cert_path), "-H", "Content-Type: application/json",
                  "--data", '{"account": "eliza@betterbag.test", "device": "an iPhone"}', url])
    body, status = result.stdout.decode().rsplit("\n", 1)
    assert status == "400" and json.loads(body)["error"] == "bad-sign-in-request"


def test_the_service_unavailable_fault_and_its_clear(lab, session):
    lab.faults.set("maa-service-unavailable", times=1)
    down = sign_in(lab, session)
    assert down.status_code == 503 and down.json()["alert"]["message"] == "Could not communicate with the server."
    assert sign_in(lab, session).status_code == 403  # one use consumed: the service judges again
