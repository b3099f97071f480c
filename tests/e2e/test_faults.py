"""Faults end to end: armed over the control API (HTTPS), felt through the lab's real DNS and TLS.

Every org-domain fault of the catalogue has its expected device diagnosis here (a new fault without one fails);
DNS faults are checked with dig, TLS faults with curl and the simulated device; the control API's errors and
clears, and the `mdmlab fault` / `mdmlab dns` commands, against the same running lab.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import requests

from lab.device import Device, Network
from lab.dns import DNS_FAULTS
from lab.faults import TLS_FAULTS
from lab.launcher import Lab
from lab.scenario import load
from mocks.org_domain import FAULTS as ORG_DOMAIN_FAULTS
from mocks.org_domain import WELL_KNOWN_PATH
from tests.conftest import IDENTIFIER, PASSWORD, ROOT, require_tool

HOST = "betterbag.test"
APPLE_HOST = "axm-adm-enroll.lab.test"
TIMEOUT = 60  # every subprocess and HTTP wait is bounded by this
MDMLAB = [sys.executable, "-m", "lab"]

# What an iOS 17.5 iPhone (no ABM/ASM fallback) diagnoses for each org-domain fault, armed for one request.
EXPECTED_DIAGNOSIS = {
    "well-known-404": "well-known-http-404",
    "well-known-403": "well-known-http-403",
    "well-known-500": "well-known-http-500",
    "well-known-503": "well-known-http-503",
    "well-known-refused": "well-known-refused",
    "html-error-page": "well-known-content-type",
    "json-as-html": "well-known-content-type",
    "json-as-text": "well-known-content-type",
    "malformed-json": "well-known-malformed-json",
    "missing-servers": "well-known-missing-servers",
    "empty-servers": "well-known-empty-servers",
    "two-servers": "dns-nxdomain",  # the first entry's host (mdm-old.lab.test) no longer resolves
    "misspelled-version": "well-known-missing-keys",
    "wrong-mode": "profile-enrollment-mode",
    "base-url-http": "base-url-not-https",
    "redirect-loop": "redirect-loop",
    "redirect-to-http": "redirect-to-http",
    "redirect-drops-query": "redirect-dropped-query",
    "trailing-dot-path": "well-known-http-404",
    "slow-response": "timeout",
    "connection-reset": "connection-reset",
}
# Where the device gives up (the stage of the failing step).
EXPECTED_STAGE = {"two-servers": "authentication", "wrong-mode": "enrollment"}

TLS_CURL = {  # fault → what curl (OpenSSL) says about the certificate
    "tls-expired": "certificate has expired",
    "tls-not-yet-valid": "certificate is not yet valid",
    "tls-wrong-name": "no alternative certificate subject name matches",
    "tls-untrusted": "unable to get local issuer certificate",
}


# -- helpers ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default scenario's lab with the MDM's schema check at warn: wrong-mode sends the device to the endpoint
    of the other enrollment type, where a strict check would refuse its (right) request before the fault's own
    symptom; the wrong-mode scenario does the same."""
    scenario = load("betterbag")
    scenario = replace(scenario, mdm=replace(scenario.mdm, schema_check="warn"))
    with Lab(scenario, tmp_path_factory.mktemp("lab"), https_port=0, dns_port=0) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left(lab):
    """Every test starts and ends with nothing armed, whatever the previous one did."""
    lab.faults.clear()
    yield
    lab.faults.clear()


@pytest.fixture(scope="module")
def api(lab):
    """The control API over HTTPS at https://localhost:PORT/api, trusting only the lab CA."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(lab.pki.cert_path)
    base = f"https://localhost:{lab.https_port}/api"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, base + path, timeout=TIMEOUT, **kwargs)

    yield call
    session.close()


def arm(api, name: str, **fields) -> dict:
    response = api("POST", "/faults", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    armed = response.json()["armed"]
    assert armed["name"] == name
    return armed


def armed_names(api) -> list[tuple[str, str]]:
    response = api("GET", "/faults")
    assert response.status_code == 200, response.text
    return sorted((a["name"], a["host"]) for a in response.json()["armed"])


def iphone(network, os_version: str = "17.5", **kwargs) -> Device:
    return Device(network, model_family="iPhone", os_version=os_version, **kwargs)


def enroll(device: Device):
    try:
        return device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()


def wait_for_events(lab, after: int, predicate, timeout: float = 10.0) -> list[dict]:
    """Events after ``after`` matching ``predicate``; polls (bounded) because a slow or reset exchange is
    recorded by the lab only once its handler returns, which may be after the device gave up."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in lab.events.query(after=after, limit=5000) if predicate(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def dig(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def dig_status(result: subprocess.CompletedProcess) -> str:
    for line in result.stdout.splitlines():
        if "->>HEADER<<-" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError(f"no header in dig output (exit {result.returncode}):\n{result.stdout}{result.stderr}")


def curl_well_known(lab) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("curl"), "--silent", "--show-error", "--max-time", "20",
         "--connect-to", f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path),
         f"https://{HOST}{WELL_KNOWN_PATH}?user-identifier={IDENTIFIER}"],
        capture_output=True, text=True, timeout=TIMEOUT)


def mdmlab(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MDMLAB, *args, "--state-dir", str(lab.state_dir)], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT)


# -- 1. every org-domain fault --------------------------------------------------------------------------------
def test_every_org_domain_fault_has_an_expected_diagnosis():
    assert set(EXPECTED_DIAGNOSIS) == {f.name for f in ORG_DOMAIN_FAULTS}


def test_the_control_api_lists_the_whole_catalogue(lab, api):
    response = api("GET", "/faults")
    assert response.status_code == 200
    listed = {f["name"]: f for f in response.json()["catalogue"]}
    assert set(listed) == set(lab.faults.catalogue)  # the API lists what the lab can arm
    assert {f.name for f in [*ORG_DOMAIN_FAULTS, *DNS_FAULTS, *TLS_FAULTS]} <= set(listed)
    assert {f["name"] for f in listed.values() if f["component"] == "org-domain"} == set(EXPECTED_DIAGNOSIS)
    assert listed["slow-response"]["takes_seconds"] is True
    assert all(f["description"] and f["symptom"] for f in listed.values())
    assert response.json()["armed"] == []


@pytest.mark.parametrize("name", [f.name for f in ORG_DOMAIN_FAULTS])
def test_org_domain_fault_gives_its_diagnosis_once_then_enrollment_works(lab, api, network, name):
    expected = EXPECTED_DIAGNOSIS[name]
    slow = name == "slow-response"
    armed = arm(api, name, times=1, **({"seconds": 2} if slow else {}))
    assert armed["host"] == HOST and armed["remaining"] == 1 and armed["component"] == "org-domain"
    if slow:
        assert armed["seconds"] == 2.0
    after = lab.events.last_id()

    trace = enroll(iphone(network, **({"discovery_timeout": 0.5} if slow else {})))

    assert trace.outcome == "failed", trace.render()
    assert trace.diagnosis == expected, trace.render()
    assert trace.steps[-1].stage == EXPECTED_STAGE.get(name, "discovery"), trace.render()
    assert trace.path is None or trace.path == "direct"
    if name not in EXPECTED_STAGE:  # discovery failed: 17.5 predates the ABM/ASM fallback, and says so
        assert "no ABM/ASM fallback" in trace.explanation
    assert lab.faults.armed() == []  # consumed

    faulted = wait_for_events(lab, after, lambda e: e["kind"] == "http" and e["component"] == "org-domain"
                              and e["host"] == HOST and e["path"] == WELL_KNOWN_PATH
                              and f"fault {name}" in (e["summary"] or ""))
    assert len(faulted) == 1, [e["summary"] for e in lab.events.query(after=after)]
    assert faulted[0]["device"] == IDENTIFIER

    second = enroll(iphone(network, **({"discovery_timeout": 5} if slow else {})))
    assert second.outcome == "enrolled", second.render()
    assert second.path == "direct"


def test_slow_response_within_the_device_timeout_still_enrolls(lab, api, network):
    arm(api, "slow-response", times=1, seconds=0.3)
    trace = enroll(iphone(network, discovery_timeout=10))
    assert trace.outcome == "enrolled", trace.render()
    discovery = next(s for s in trace.steps if s.stage == "discovery" and s.action.startswith("GET"))
    assert discovery.elapsed_ms >= 300


def test_fault_without_times_stays_until_cleared(lab, api, network):
    armed = arm(api, "well-known-500")
    assert armed["remaining"] is None
    for _ in range(2):
        assert enroll(iphone(network)).diagnosis == "well-known-http-500"
    assert armed_names(api) == [("well-known-500", HOST)]
    assert lab.faults.armed()[0]["used"] == 2
    assert api("DELETE", "/faults").json() == {"cleared": 1}
    assert enroll(iphone(network)).outcome == "enrolled"


def test_times_counts_requests_in_arrival_order(lab, api, network):
    arm(api, "well-known-503", times=2)
    assert enroll(iphone(network)).diagnosis == "well-known-http-503"
    assert [(a["name"], a["remaining"]) for a in api("GET", "/faults").json()["armed"]] == [("well-known-503", 1)]
    assert enroll(iphone(network)).diagnosis == "well-known-http-503"
    assert armed_names(api) == []
    assert enroll(iphone(network)).outcome == "enrolled"


# -- 2. the required example: the same 404, an 18.2 iPhone enrolls through ABM ---------------------------------
def test_404_on_the_org_domain_sends_an_18_2_iphone_through_abm(lab, api):
    arm(api, "well-known-404", times=1)
    network = Network("127.0.0.1", lab.dns.port, str(lab.pki.cert_path), lab.https_port, APPLE_HOST)
    after = lab.events.last_id()

    trace = enroll(iphone(network, os_version="18.2"))

    assert trace.outcome == "enrolled", trace.render()
    assert trace.path == "abm"
    fallback = [s for s in trace.steps if "ABM" in s.action or "ABM" in s.explanation]
    assert fallback, trace.render()
    assert any(s.code == "abm-fallback" for s in trace.steps)
    assert "well-known-http-404" in " ".join(s.explanation for s in fallback)
    assert "via ABM/ASM" in trace.render()
    hosts = [e["host"] for e in lab.events.query(after=after) if e["kind"] == "http"]
    assert hosts[0] == HOST and APPLE_HOST in hosts


def test_org_not_supported_armed_at_run_time_takes_effect_on_the_fallback(lab, api):
    network = Network("127.0.0.1", lab.dns.port, str(lab.pki.cert_path), lab.https_port, APPLE_HOST)
    arm(api, "org-not-supported")
    arm(api, "well-known-404", times=2)
    trace = enroll(iphone(network, os_version="18.2"))
    assert (trace.outcome, trace.diagnosis) == ("failed", "abm-org-not-supported"), trace.render()
    assert api("DELETE", "/faults/org-not-supported").json() == {"cleared": 1}
    assert enroll(iphone(network, os_version="18.2")).outcome == "enrolled"


def test_the_same_404_without_the_fallback_host_in_reach_still_fails_on_17_5(lab, api, network):
    arm(api, "well-known-404", times=1)
    trace = enroll(iphone(network, os_version="17.5"))
    assert trace.outcome == "failed" and trace.diagnosis == "well-known-http-404"
    assert not any(s.code == "abm-fallback" for s in trace.steps)


# -- 3. DNS faults, seen by dig -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expect", [
    ("dns-nxdomain", "NXDOMAIN"),
    ("dns-servfail", "SERVFAIL"),
    ("dns-timeout", "timeout"),
    ("dns-wrong-address", "127.0.0.2"),
])
def test_dns_fault_as_dig_sees_it_then_the_next_query_is_normal(lab, api, name, expect):
    require_tool("dig")
    armed = arm(api, name, times=1)
    assert armed["host"] == HOST and armed["component"] == "dns"

    faulted = dig(lab, HOST, "A", "+time=1", "+tries=1")
    if expect == "timeout":
        assert faulted.returncode == 9, faulted.stdout + faulted.stderr
        assert "timed out" in faulted.stdout + faulted.stderr
    elif expect == "127.0.0.2":
        assert faulted.returncode == 0, faulted.stderr
        assert dig_status(faulted) == "NOERROR"
        answers = dig(lab, HOST, "A", "+short", "+time=1", "+tries=1")  # the fault is spent: normal again
        assert answers.stdout.split() == ["127.0.0.1"]
        lines = [ln.split() for ln in faulted.stdout.splitlines() if ln and not ln.startswith(";")]
        assert [ln[-1] for ln in lines if ln[3:4] == ["A"]] == ["127.0.0.2"]
    else:
        assert faulted.returncode == 0, faulted.stderr
        assert dig_status(faulted) == expect
    assert lab.faults.armed() == []

    normal = dig(lab, HOST, "A", "+time=1", "+tries=1")
    assert normal.returncode == 0, normal.stdout + normal.stderr
    assert dig_status(normal) == "NOERROR"
    assert "127.0.0.1" in normal.stdout and "127.0.0.2" not in normal.stdout


@pytest.mark.parametrize("name, expect", [("dns-nxdomain", "NXDOMAIN"), ("dns-servfail", "SERVFAIL")])
def test_dns_fault_over_tcp(lab, api, name, expect):
    arm(api, name, times=1)
    faulted = dig(lab, "+tcp", HOST, "A", "+time=2", "+tries=1")
    assert faulted.returncode == 0, faulted.stdout + faulted.stderr
    assert dig_status(faulted) == expect
    normal = dig(lab, "+tcp", HOST, "A", "+short", "+time=2", "+tries=1")
    assert normal.returncode == 0 and normal.stdout.split() == ["127.0.0.1"]


def test_dns_timeout_over_tcp_gets_no_answer(lab, api):
    arm(api, "dns-timeout", times=1)
    faulted = dig(lab, "+tcp", HOST, "A", "+time=1", "+tries=1")
    assert faulted.returncode == 9, faulted.stdout + faulted.stderr
    assert dig_status(dig(lab, "+tcp", HOST, "A", "+time=2", "+tries=1")) == "NOERROR"


def test_dns_fault_on_another_name_leaves_the_org_domain_alone(lab, api):
    arm(api, "dns-nxdomain", host="mdm.lab.test", times=1)
    assert dig_status(dig(lab, HOST, "A", "+time=1", "+tries=1")) == "NOERROR"
    assert armed_names(api) == [("dns-nxdomain", "mdm.lab.test")]
    assert dig_status(dig(lab, "mdm.lab.test", "A", "+time=1", "+tries=1")) == "NXDOMAIN"
    assert armed_names(api) == []


def test_dns_fault_matches_the_name_in_any_case(lab, api):
    arm(api, "dns-servfail", times=1)
    assert dig_status(dig(lab, "BetterBag.TEST", "A", "+time=1", "+tries=1")) == "SERVFAIL"
    assert dig_status(dig(lab, "betterbag.test.", "A", "+time=1", "+tries=1")) == "NOERROR"


@pytest.mark.parametrize("name, diagnosis", [
    ("dns-nxdomain", "dns-nxdomain"),
    ("dns-nodata", "dns-nodata"),
    ("dns-servfail", "dns-servfail"),
    ("dns-timeout", "dns-timeout"),
    ("dns-wrong-address", "connection-refused"),
])
def test_dns_fault_as_the_device_diagnoses_it(lab, api, network, name, diagnosis):
    arm(api, name, times=1)
    trace = enroll(iphone(network))
    assert trace.outcome == "failed" and trace.diagnosis == diagnosis, trace.render()
    assert trace.steps[-1].stage == "discovery"
    assert enroll(iphone(network)).outcome == "enrolled"


def test_dns_nxdomain_at_the_apex_takes_its_soa_too_as_a_lapsed_domain(lab, api):
    arm(api, "dns-nxdomain")
    soa = dig(lab, HOST, "SOA", "+time=1", "+tries=1")
    assert dig_status(soa) == "NXDOMAIN"
    assert "test.\t" in soa.stdout.split("AUTHORITY SECTION:")[1] and " aa" not in soa.stdout.split("flags:")[1][:20]


def test_dns_nodata_is_a_deleted_record_noerror_and_no_answer(lab, api):
    arm(api, "dns-nodata", times=1)
    faulted = dig(lab, HOST, "A", "+time=1", "+tries=1")
    assert dig_status(faulted) == "NOERROR" and "ANSWER: 0," in faulted.stdout
    assert dig(lab, HOST, "A", "+short", "+time=1", "+tries=1").stdout.split() == ["127.0.0.1"]


def test_cli_dns_list_shows_what_the_dns_answers_under_a_fault(lab, api):
    arm(api, "dns-servfail")
    listing = mdmlab(lab, "dns", "list")
    assert listing.returncode == 0, listing.stderr
    rows = [ln.split() for ln in listing.stdout.splitlines() if ln.startswith(HOST + " ")]
    assert rows == [[HOST, "*", "SERVFAIL", "(overridden:", "fault", "dns-servfail,", "until", "cleared)"]]
    assert dig_status(dig(lab, HOST, "A", "+time=1", "+tries=1")) == "SERVFAIL"


def test_cli_dns_add_says_why_a_record_is_not_served(lab, api):
    arm(api, "dns-nxdomain", host="mdm.lab.test")
    try:
        added = mdmlab(lab, "dns", "add", "mdm.lab.test", "A", "127.0.0.9")
        assert added.returncode == 1
        assert "not served" in added.stderr and "NXDOMAIN" in added.stderr and "dns-nxdomain" in added.stderr
        again = mdmlab(lab, "dns", "add", "mdm.lab.test", "A", "127.0.0.1")
        assert again.returncode == 1 and "not served" in again.stderr
    finally:
        lab.zone.remove("mdm.lab.test", "A", "127.0.0.9")
    lab.faults.clear()
    same = mdmlab(lab, "dns", "add", "mdm.lab.test", "A", "127.0.0.1")
    assert same.returncode == 0 and "already in the zone: nothing changed" in same.stdout


# -- 4. TLS faults: curl and the device ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TLS_CURL))
def test_tls_fault_as_curl_sees_it_then_the_next_handshake_is_normal(lab, api, name):
    require_tool("curl")
    armed = arm(api, name, times=1)
    assert armed["host"] == HOST and armed["component"] == "tls"

    faulted = curl_well_known(lab)
    assert faulted.returncode == 60, f"exit {faulted.returncode}: {faulted.stderr}"
    assert TLS_CURL[name] in faulted.stderr, faulted.stderr
    assert lab.faults.armed() == []

    normal = curl_well_known(lab)
    assert normal.returncode == 0, normal.stderr
    assert json.loads(normal.stdout)["Servers"][0]["Version"] == "mdm-byod"


def test_tls_fault_names_the_tls_catalogue():
    assert set(TLS_CURL) == {f.name for f in TLS_FAULTS}


@pytest.mark.parametrize("name", sorted(TLS_CURL))
def test_tls_fault_as_the_device_diagnoses_it(lab, api, network, name):
    arm(api, name, times=1)
    trace = enroll(iphone(network))
    assert trace.outcome == "failed", trace.render()
    assert trace.diagnosis == name, trace.render()
    assert trace.steps[-1].stage == "discovery"
    assert HOST in trace.explanation
    assert enroll(iphone(network)).outcome == "enrolled"


def test_tls_fault_on_the_mdm_host_fails_at_the_first_enrollment_request(lab, api, network):
    arm(api, "tls-expired", host="mdm.lab.test", times=1)
    trace = enroll(iphone(network))
    assert trace.outcome == "failed" and trace.diagnosis == "tls-expired", trace.render()
    assert trace.steps[-1].stage == "authentication"
    assert "mdm.lab.test" in trace.explanation


# -- 5. the fault API's errors --------------------------------------------------------------------------------
def assert_still_serving(lab, api, network):
    health = api("GET", "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert armed_names(api) == []
    assert dig_status(dig(lab, HOST, "A", "+time=1", "+tries=1")) == "NOERROR"


@pytest.mark.parametrize("body, status, code", [
    ({"name": "nope"}, 404, "unknown-fault"),
    ({"name": "well-known-404", "host": "mdm.lab.test"}, 400, "bad-fault-host"),
    ({"name": "well-known-404", "host": "nowhere.example"}, 400, "bad-fault-host"),
    ({"name": "tls-expired", "host": "console.lab.test"}, 400, "bad-fault-host"),
    ({"name": "tls-expired", "host": "localhost"}, 400, "bad-fault-host"),
    ({"name": "dns-nxdomain", "host": "localhost"}, 400, "bad-fault-host"),
    ({"name": "well-known-404", "host": 7}, 400, "bad-fault-host"),
    ({"name": "well-known-404", "times": 0}, 400, "bad-times"),
    ({"name": "well-known-404", "times": -1}, 400, "bad-times"),
    ({"name": "well-known-404", "times": "1"}, 400, "bad-times"),
    ({"name": "well-known-404", "times": 1.5}, 400, "bad-times"),
    ({"name": "well-known-404", "times": True}, 400, "bad-times"),
    ({"name": "slow-response", "seconds": -1}, 400, "bad-seconds"),
    ({"name": "slow-response", "seconds": 121}, 400, "bad-seconds"),
    ({"name": "slow-response", "seconds": "2"}, 400, "bad-seconds"),
    ({"name": "well-known-404", "seconds": 5}, 400, "bad-seconds"),  # a fault that takes no delay
    ({"name": "well-known-404", "tmes": 1}, 400, "bad-fault-request"),
    ({"times": 1}, 400, "bad-fault-request"),
])
def test_bad_fault_requests_are_refused_with_a_code(lab, api, network, body, status, code):
    after = lab.events.last_id()
    response = api("POST", "/faults", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["message"]
    assert not [e for e in lab.events.query(after=after) if e["component"] == "faults"]  # nothing armed
    assert_still_serving(lab, api, network)


@pytest.mark.parametrize("data, content_type", [
    (b"not json", "application/json"),
    (b'{"name": "well-known-404"', "application/json"),
    (b'["well-known-404"]', "application/json"),
    (b"name=well-known-404", "application/x-www-form-urlencoded"),
    (b"", "application/json"),
])
def test_non_json_fault_bodies_are_refused(lab, api, network, data, content_type):
    response = api("POST", "/faults", data=data, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad-json"
    assert_still_serving(lab, api, network)


def test_clearing_an_unknown_fault_is_a_404(lab, api, network):
    response = api("DELETE", "/faults/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown-fault"
    assert_still_serving(lab, api, network)


def test_the_lab_still_enrolls_after_refused_fault_requests(lab, api, network):
    for body in ({"name": "nope"}, {"name": "well-known-404", "times": 0}, {"name": "well-known-404", "host": "x.y"}):
        assert api("POST", "/faults", json=body).status_code in (400, 404)
    assert api("POST", "/faults", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert enroll(iphone(network)).outcome == "enrolled"


def test_fault_host_is_normalised(lab, api, network):
    armed = arm(api, "well-known-500", host="BetterBag.Test.", times=1)
    assert armed["host"] == HOST
    assert enroll(iphone(network)).diagnosis == "well-known-http-500"


# -- 6. clearing -----------------------------------------------------------------------------------------------
def test_clear_one_by_name_then_the_rest(lab, api, network):
    arm(api, "well-known-404")
    arm(api, "dns-servfail")
    arm(api, "tls-expired", host="mdm.lab.test")
    assert armed_names(api) == [("dns-servfail", HOST), ("tls-expired", "mdm.lab.test"), ("well-known-404", HOST)]

    response = api("DELETE", "/faults/well-known-404")
    assert response.status_code == 200 and response.json() == {"cleared": 1}
    assert armed_names(api) == [("dns-servfail", HOST), ("tls-expired", "mdm.lab.test")]

    response = api("DELETE", "/faults")
    assert response.status_code == 200 and response.json() == {"cleared": 2}
    assert armed_names(api) == []
    assert api("DELETE", "/faults").json() == {"cleared": 0}
    assert enroll(iphone(network)).outcome == "enrolled"


def test_clear_by_host(lab, api):
    arm(api, "dns-nxdomain")
    arm(api, "dns-nxdomain", host="mdm.lab.test")
    assert api("DELETE", "/faults/dns-nxdomain", params={"host": "mdm.lab.test"}).json() == {"cleared": 1}
    assert armed_names(api) == [("dns-nxdomain", HOST)]
    assert api("DELETE", "/faults", params={"host": "mdm.lab.test"}).json() == {"cleared": 0}
    assert api("DELETE", "/faults", params={"host": HOST}).json() == {"cleared": 1}
    assert armed_names(api) == []


def test_clear_by_host_accepts_the_host_as_it_was_set(lab, api):
    """`fault set --host BetterBag.Test.` then `fault clear --host BetterBag.Test.` must clear it."""
    arm(api, "well-known-404", host="BetterBag.Test.")
    response = api("DELETE", "/faults/well-known-404", params={"host": "BetterBag.Test."})
    assert response.json() == {"cleared": 1}
    assert armed_names(api) == []


def test_arming_the_same_fault_again_replaces_it(lab, api):
    arm(api, "well-known-404", times=3)
    arm(api, "well-known-404", times=1)
    armed = api("GET", "/faults").json()["armed"]
    assert [(a["name"], a["remaining"]) for a in armed] == [("well-known-404", 1)]


# -- 7. the CLI ------------------------------------------------------------------------------------------------
def test_cli_fault_set_list_and_clear(lab, network):
    result = mdmlab(lab, "fault", "set", "well-known-500", "--times", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "armed well-known-500 on betterbag.test" in result.stdout

    listing = mdmlab(lab, "fault", "list")
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith("well-known-500 "))
    assert "[armed on betterbag.test ×1]" in line
    assert sum("[armed on" in ln for ln in listing.stdout.splitlines()) == 1

    as_json = json.loads(mdmlab(lab, "fault", "list", "--json").stdout)
    assert [(a["name"], a["host"], a["remaining"]) for a in as_json["armed"]] == [("well-known-500", HOST, 1)]

    trace = enroll(iphone(network))
    assert trace.outcome == "failed" and trace.diagnosis == "well-known-http-500", trace.render()
    assert "[armed on" not in mdmlab(lab, "fault", "list").stdout

    bad = mdmlab(lab, "fault", "set", "nope")
    assert bad.returncode == 1
    assert bad.stdout == ""
    error = bad.stderr.strip()
    assert "\n" not in error and error.startswith("Error:"), bad.stderr
    assert "nope" in error and "mdmlab fault list" in error  # the CLI names the fix, not the API's code
    assert "Traceback" not in bad.stderr

    assert mdmlab(lab, "fault", "set", "dns-servfail").returncode == 0
    assert mdmlab(lab, "fault", "set", "tls-untrusted", "--host", "mdm.lab.test", "--times", "2").returncode == 0
    assert len(lab.faults.armed()) == 2
    cleared = mdmlab(lab, "fault", "clear", "dns-servfail")
    assert cleared.returncode == 0 and "cleared 1 fault(s)" in cleared.stdout
    cleared = mdmlab(lab, "fault", "clear")
    assert cleared.returncode == 0 and "cleared 1 fault(s)" in cleared.stdout, cleared.stdout + cleared.stderr
    assert lab.faults.armed() == []
    assert enroll(iphone(network)).outcome == "enrolled"


def test_cli_fault_set_refuses_bad_options(lab):
    for args in (("--times", "0"), ("--seconds", "500")):
        result = mdmlab(lab, "fault", "set", "slow-response", *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    bad_host = mdmlab(lab, "fault", "set", "well-known-404", "--host", "mdm.lab.test")
    assert bad_host.returncode == 1 and "bad-fault-host" in bad_host.stderr
    assert lab.faults.armed() == []


def test_cli_dns_add_and_remove_a_txt_record(lab):
    require_tool("dig")
    try:
        added = mdmlab(lab, "dns", "add", HOST, "TXT", "hello")
        assert added.returncode == 0, added.stdout + added.stderr
        assert {"name": HOST, "type": "TXT", "value": "hello"} in lab.zone.listing()

        txt = dig(lab, HOST, "TXT", "+short", "+time=1", "+tries=1")
        assert txt.returncode == 0, txt.stderr
        assert '"hello"' in txt.stdout.splitlines()

        listing = mdmlab(lab, "dns", "list")
        assert listing.returncode == 0
        assert any(ln.split() == [HOST, "TXT", "hello"] for ln in listing.stdout.splitlines())

        removed = mdmlab(lab, "dns", "remove", HOST, "TXT", "hello")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "removed 1 record(s)" in removed.stdout
        txt = dig(lab, HOST, "TXT", "+short", "+time=1", "+tries=1")
        assert txt.returncode == 0
        assert '"hello"' not in txt.stdout.splitlines()
        assert dig_status(dig(lab, HOST, "A", "+time=1", "+tries=1")) == "NOERROR"  # the rest of the name stays
    finally:
        lab.zone.remove(HOST, "TXT", "hello")


def test_dns_records_over_the_control_api(lab, api):
    try:
        response = api("POST", "/dns/records", json={"name": "BetterBag.Test.", "type": "TXT", "value": "via-api"})
        assert response.status_code == 201, response.text
        assert response.json() == {"name": HOST, "type": "TXT", "value": "via-api", "added": True, "served": True}
        assert {"name": HOST, "type": "TXT", "value": "via-api"} in api("GET", "/dns/records").json()
        assert '"via-api"' in dig(lab, HOST, "TXT", "+short", "+time=1", "+tries=1").stdout.splitlines()
        outside = api("POST", "/dns/records", json={"name": "example.com", "type": "TXT", "value": "x"})
        assert outside.status_code == 400 and outside.json()["error"] == "bad-record"
        response = api("DELETE", "/dns/records", json={"name": HOST, "type": "TXT", "value": "via-api"})
        assert response.json() == {"removed": 1, "records": [{"name": HOST, "type": "TXT", "value": "via-api"}]}
        assert '"via-api"' not in dig(lab, HOST, "TXT", "+short", "+time=1", "+tries=1").stdout.splitlines()
    finally:
        lab.zone.remove(HOST, "TXT", "via-api")
