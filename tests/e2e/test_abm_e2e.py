"""ABM/ASM through the lab's real DNS and TLS: an admin verifies the domain with a TXT record, fixes the default
assignment, and the iOS 18.2 fallback follows; the MDM's registration is visible through the DEP API."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lab import oauth1
from lab.device import Device
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """domain-not-verified: the well-known answers 404 and ABM has not verified betterbag.test."""
    with Lab(load("domain-not-verified"), tmp_path_factory.mktemp("abm"), fresh=True) as running:
        yield running


def origin(lab, role: str) -> str:
    return lab.origin(lab.scenario.abm_hosts[role])


def enroll(lab, os_version="18.2"):
    device = Device(lab.network(), os_version=os_version)
    try:
        return device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()


def mdmlab(lab, *args):
    return subprocess.run([sys.executable, "-m", "lab", *args, "--state-dir", str(lab.state_dir)],
                          capture_output=True, text=True, timeout=60)


def test_admin_verifies_the_domain_through_the_lab_dns_and_the_fallback_then_works(lab, session):
    trace = enroll(lab)
    assert (trace.outcome, trace.diagnosis) == ("failed", "abm-domain-not-verified")

    page = session.get(origin(lab, "admin") + "/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    value = lab.abm.verification_record("betterbag.test")
    assert value in page.text

    refused = session.post(origin(lab, "admin") + "/domains/verify", data={"domain": "betterbag.test"}, timeout=5)
    assert refused.status_code == 200 and "not verified" in refused.text.lower()  # 303 followed back to the page

    added = mdmlab(lab, "dns", "add", "betterbag.test", "TXT", value)
    assert added.returncode == 0, added.stderr
    dig = run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), "betterbag.test", "TXT", "+short"])
    assert value in dig.stdout.decode()

    verified = session.post(origin(lab, "admin") + "/domains/verify", data={"domain": "betterbag.test"}, timeout=5)
    assert verified.status_code == 200
    assert lab.abm.snapshot()["domains"][0]["verified"] is True

    trace = enroll(lab)
    assert (trace.outcome, trace.path) == ("enrolled", "abm"), trace.render()
    verify_events = [e for e in lab.events.query(kind="dns") if e["method"] == "TXT"]
    assert verify_events and value in verify_events[-1]["summary"]


def test_ios_17_5_never_asks_abm(lab):
    after = lab.events.last_id()
    trace = enroll(lab, os_version="17.5")
    assert (trace.outcome, trace.diagnosis) == ("failed", "well-known-http-404")
    assert not [e for e in lab.events.query(after=after) if e["component"] == "abm"]


def test_default_assignment_and_accounts_decide_the_fallback(lab, session):
    lab.abm.verify_domain("betterbag.test")
    saved = session.post(origin(lab, "admin") + "/assignments", data={"iPhone": ""}, timeout=5)
    assert saved.status_code == 200
    assert enroll(lab).diagnosis == "abm-no-default-assignment"
    server = lab.scenario.abm.servers[0].name
    session.post(origin(lab, "admin") + "/assignments", data={"iPhone": server}, timeout=5)

    session.post(origin(lab, "admin") + "/accounts/remove", data={"identifier": IDENTIFIER}, timeout=5)
    assert enroll(lab).diagnosis == "abm-unknown-managed-account"
    session.post(origin(lab, "admin") + "/accounts/add", data={"identifier": IDENTIFIER}, timeout=5)
    assert enroll(lab).outcome == "enrolled"


def test_dep_api_shows_the_url_the_mdm_registered_at_start_up(lab, session):
    server = next(s for s in lab.scenario.abm.servers if s.mdm)
    token = lab.abm.server_token(server.name)
    api = origin(lab, "api")
    header = oauth1.authorization_header("GET", api + "/session", token["consumer_key"], token["consumer_secret"],
                                         token["access_token"], token["access_secret"])
    auth = session.get(api + "/session", headers={"Authorization": header}, timeout=5)
    assert auth.status_code == 200
    headers = {"X-ADM-Auth-Session": auth.json()["auth_session_token"]}
    profile = session.get(api + "/account-driven-enrollment/profile", headers=headers, timeout=5)
    assert profile.json()["mdm_service_discovery_url"] == lab.urls["mdm"]["discovery_url"]
    assert session.get(api + "/account", headers=headers, timeout=5).json()["org_name"] == "BetterBag"
    bad = session.post(api + "/account-driven-enrollment/profile", headers=headers,
                       json={"mdm_service_discovery_url": "http://insecure.example"}, timeout=5)
    assert (bad.status_code, bad.text.strip()) == (400, "MDM_SERVICE_DISCOVERY_URL_NOT_VALID")
    assert session.get(api + "/account", timeout=5).status_code == 401
    registrations = [e for e in lab.events.query(component="abm")
                     if e["method"] == "POST" and e["path"] == "/account-driven-enrollment/profile"]
    assert registrations[0]["status"] == 200  # the MDM's own call at start-up, over HTTPS


def test_curl_sees_the_fallback_redirect_with_the_query(lab):
    lab.abm.verify_domain("betterbag.test")
    curl = require_tool("curl")
    url = (f"https://{lab.scenario.abm_hosts['fallback']}/.well-known/com.apple.remotemanagement"
           f"?user-identifier={IDENTIFIER}&model-family=iPhone")
    result = run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--connect-to",
                  f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path), url])
    status, location = result.stdout.decode().split(" ", 1)
    assert status == "302"
    assert location.startswith(lab.urls["mdm"]["discovery_url"])
    assert re.search(r"user-identifier=eliza@betterbag\.test", location) and "model-family=iPhone" in location


def test_the_admin_site_is_behind_the_admin_gate_over_real_tls(lab, session):
    require_tool("curl")
    admin = origin(lab, "admin")
    host, port = lab.scenario.abm_hosts["admin"], lab.https_port

    def curl(*args):
        out = run([require_tool("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                   str(lab.pki.cert_path), "--resolve", f"{host}:{port}:127.0.0.1", *args], timeout=30)
        return out.stdout.decode()

    cross_site = curl("-H", "Origin: https://evil.example", "-d", f"identifier={IDENTIFIER}",
                      f"{admin}/accounts/remove")
    assert cross_site == "403" and IDENTIFIER in lab.abm.accounts()
    framed = session.get(admin + "/", timeout=5)
    assert "frame-ancestors 'none'" in framed.headers["Content-Security-Policy"]
    lab.admin_token = "lab-token-for-this-test"  # as beyond loopback, without leaving it
    try:
        assert curl("-d", "identifier=intruder@betterbag.test", f"{admin}/accounts/add") == "401"
        assert "intruder@betterbag.test" not in lab.abm.accounts()
        assert curl("-H", "Authorization: Bearer lab-token-for-this-test", "-d", "identifier=zoe@betterbag.test",
                    f"{admin}/accounts/add") == "303"
        assert "zoe@betterbag.test" in lab.abm.accounts()
    finally:
        lab.admin_token = None
        lab.abm.remove_account("zoe@betterbag.test")
