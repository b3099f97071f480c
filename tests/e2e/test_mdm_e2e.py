"""Stages 2-5 through the lab's real DNS and TLS: OAuth 2 with refresh, tokens expiring and revoked mid-session
(both methods), Device Enrollment of a Mac, every command User Enrollment forbids, unenrollment from both sides with
its data-separation effects, backup and restore, federated sign-in and Enrollment SSO. MDM actions go through the
console's control API over HTTPS, as an admin would use them."""
from __future__ import annotations

import contextlib
import json
import time

import pytest
import requests

from lab.device import Device, Network
from lab.device.commands import FORBIDDEN_UE
from lab.device.store import DeviceStore
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD

TIMEOUT = 10


class Running:
    """A lab of one scenario, its console API, and devices pointed at it."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(lab.pki.cert_path)
        self.devices: list[Device] = []

    def api(self, method: str, path: str, **kwargs):
        response = self.session.request(method, f"https://localhost:{self.lab.https_port}/api{path}",
                                        timeout=TIMEOUT, **kwargs)
        assert response.status_code < 400, response.text
        return response.json()

    @property
    def network(self) -> Network:
        return self.lab.network()

    def device(self, **kwargs) -> Device:
        made = Device(self.network, **kwargs)
        self.devices.append(made)
        return made

    def enrolled(self, **kwargs) -> Device:
        made = self.device(**kwargs)
        trace = made.enroll(IDENTIFIER, PASSWORD)
        assert trace.outcome == "enrolled", trace.render()
        return made

    def http(self, after: int, host: str | None = None) -> list[tuple]:
        return [(e["method"], e["path"], e["status"]) for e in self.lab.events.query(after=after, limit=5000)
                if e["kind"] == "http" and e["component"] in ("mdm", "idp") and (host is None or e["host"] == host)]

    def queue(self, device: Device, request_type: str, **params) -> str:
        eid = device.enrollment.enrollment_id
        return self.api("POST", f"/mdm/enrollments/{eid}/commands", json={"request_type": request_type,
                                                                           "params": params})["command_uuid"]

    def results(self, enrollment_id: str) -> dict:
        return {c["command_uuid"]: c for c in self.api("GET", f"/mdm/enrollments/{enrollment_id}/commands")}

    def close(self):
        for made in self.devices:
            made.close()
        self.session.close()


@contextlib.contextmanager
def running(scenario: str, directory):
    with Lab(load(scenario), directory, https_port=0, dns_port=0) as lab:
        env = Running(lab)
        try:
            yield env
        finally:
            env.close()


@pytest.fixture(scope="module")
def oauth(tmp_path_factory):
    with running("auth-oauth2", tmp_path_factory.mktemp("oauth")) as env:
        yield env


@pytest.fixture(scope="module")
def simple(tmp_path_factory):
    with running("betterbag", tmp_path_factory.mktemp("simple")) as env:
        yield env


@pytest.fixture(autouse=True)
def no_faults_left(request):
    yield
    for name in ("oauth", "simple"):
        if name in request.fixturenames:
            request.getfixturevalue(name).lab.faults.clear()


# -- OAuth 2 ---------------------------------------------------------------------------------------------------------
def test_oauth2_enrollment_then_silent_refresh_when_the_token_expires(oauth):
    after = oauth.lab.events.last_id()
    phone = oauth.enrolled()
    assert oauth.http(after) == [
        ("POST", "/enroll", 401), ("GET", "/oauth2/authorize", 200), ("POST", "/oauth2/authorize", 308),
        ("POST", "/oauth2/token", 200), ("POST", "/enroll", 200), ("PUT", "/mdm/checkin", 200),
        ("PUT", "/mdm/checkin", 200), ("PUT", "/mdm/checkin", 200)]  # Authenticate, TokenUpdate, GetToken
    credentials = phone.enrollment.credentials
    assert credentials.method == "apple-oauth2" and credentials.refresh_token and credentials.expires_at
    eid = phone.enrollment.enrollment_id
    assert oauth.api("POST", "/mdm/tokens/expire", json={"enrollment_id": eid}) == {"expired": 1}
    oauth.queue(phone, "DeviceInformation", Queries=["OSVersion", "UDID"])
    mid = oauth.lab.events.last_id()
    trace = phone.sync()
    assert trace.outcome == "synced", trace.render()
    assert oauth.http(mid) == [("PUT", "/mdm/server", 401), ("POST", "/oauth2/token", 200),
                               ("PUT", "/mdm/server", 200), ("PUT", "/mdm/server", 200)]
    assert phone.enrollment.credentials.refresh_token != credentials.refresh_token  # rotated
    [result] = oauth.results(eid).values()
    assert result["status"] == "Acknowledged" and result["result"]["QueryResponses"] == {"OSVersion": "26.1"}
    dump = json.dumps(oauth.lab.events.query(after=after, limit=5000))
    for secret in (credentials.access_token, credentials.refresh_token, phone.enrollment.access_token, PASSWORD):
        assert secret not in dump


def test_refresh_refused_then_the_user_signs_in_again(oauth):
    phone = oauth.enrolled()
    oauth.lab.mdm.expire_tokens(enrollment_id=phone.enrollment.enrollment_id)
    oauth.lab.faults.set("refresh-rejected")
    mid = oauth.lab.events.last_id()
    trace = phone.sync()
    assert trace.outcome == "synced", trace.render()
    assert oauth.http(mid) == [("PUT", "/mdm/server", 401), ("POST", "/oauth2/token", 400),
                               ("GET", "/oauth2/authorize", 200), ("POST", "/oauth2/authorize", 308),
                               ("POST", "/oauth2/token", 200), ("PUT", "/mdm/server", 200)]


def test_revocation_forces_a_sign_in_and_without_the_person_the_commands_wait(oauth):
    phone = oauth.enrolled()
    eid = phone.enrollment.enrollment_id
    assert oauth.api("POST", "/mdm/tokens/revoke", json={"enrollment_id": eid}) == {"revoked": 1}
    uuid = oauth.queue(phone, "ProfileList")
    phone.password = None  # nobody at the device to type it
    waiting = phone.sync()
    assert (waiting.outcome, waiting.diagnosis) == ("failed", "reauth-needs-user"), waiting.render()
    assert phone.enrollment is not None and oauth.results(eid)[uuid]["status"] == "Queued"
    mid = oauth.lab.events.last_id()
    trace = phone.sync(PASSWORD)
    assert trace.outcome == "synced", trace.render()
    assert [h for h in oauth.http(mid)][:3] == [("PUT", "/mdm/server", 401), ("POST", "/oauth2/token", 400),
                                                ("GET", "/oauth2/authorize", 200)]
    assert oauth.results(eid)[uuid]["status"] == "Acknowledged"


def test_token_lifetime_set_at_the_console_is_what_the_device_gets(oauth):
    assert oauth.api("PUT", "/mdm/token-lifetime", json={"seconds": 120}) == {"seconds": 120}
    try:
        phone = oauth.enrolled()
        remaining = phone.enrollment.credentials.expires_at - time.time()
        assert 100 < remaining <= 120
    finally:
        oauth.api("PUT", "/mdm/token-lifetime", json={"seconds": 3600})


# -- simple authentication -------------------------------------------------------------------------------------------
def test_simple_token_expiring_mid_session_means_signing_in_again(simple):
    phone = simple.enrolled()
    simple.lab.faults.set("token-expired-early", times=1)
    mid = simple.lab.events.last_id()
    trace = phone.sync()
    assert trace.outcome == "synced", trace.render()
    assert simple.http(mid) == [("PUT", "/mdm/server", 401), ("GET", "/auth/web", 200), ("POST", "/auth/web", 308),
                                ("PUT", "/mdm/server", 200)]
    assert any(s.stage == "ongoing-authentication" and s.action == "sign in again" for s in trace.steps)


def test_a_reauthentication_loop_stops_after_two_renewals(simple):
    phone = simple.enrolled()
    simple.lab.faults.set("reauth-loop")
    trace = phone.sync()
    assert (trace.outcome, trace.diagnosis) == ("failed", "reauth-loop"), trace.render()
    assert sum(1 for s in trace.steps if s.code == "token-renewal") == 2
    assert phone.enrollment is not None  # the device keeps the enrollment


def test_a_bare_401_at_a_poll_leaves_the_device_unable_to_renew(simple):
    phone = simple.enrolled()
    simple.lab.mdm.expire_tokens(enrollment_id=phone.enrollment.enrollment_id)
    simple.lab.faults.set("challenge-missing", times=1)
    trace = phone.sync()
    assert (trace.outcome, trace.diagnosis) == ("failed", "challenge-missing"), trace.render()


@pytest.mark.parametrize("fault, diagnosis", [("profile-access-rights", "profile-access-rights"),
                                              ("profile-missing-maa", "profile-missing-maa"),
                                              ("profile-mode-mismatch", "profile-enrollment-mode")])
def test_the_device_refuses_a_profile_apple_says_to_cancel_and_keeps_nothing(simple, fault, diagnosis):
    simple.lab.faults.set(fault, times=1)
    phone = simple.device()
    trace = phone.enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis, trace.steps[-1].stage) == ("failed", diagnosis, "enrollment"), \
        trace.render()
    assert phone.enrollment is None and phone.contents.vault is None
    assert not any(p.managed for p in phone.contents.profiles.values())


# -- Device Enrollment of a Mac ---------------------------------------------------------------------------------------
def test_adde_enrollment_of_a_mac_checks_in_by_udid_and_takes_the_wider_command_set(tmp_path):
    with running("mac-device-enrollment", tmp_path) as env:
        after = env.lab.events.last_id()
        mac = env.enrolled(model_family="Mac", os_version="15.2")
        assert mac.enrollment.mode == "ADDE" and mac.enrollment.enrollment_id == mac.udid
        checkins = [e for e in env.lab.events.query(after=after, limit=5000) if e["path"] == "/mdm/checkin"]
        assert {e["enrollment"] for e in checkins} == {mac.udid}
        assert env.lab.mdm.enrollment(mac.udid)["mode"] == "ADDE"
        sent = {rt: env.queue(mac, rt, **params) for rt, params in (
            ("DeviceInformation", {"Queries": ["UDID", "SerialNumber"]}), ("InstalledApplicationList", {}),
            ("RestartDevice", {}), ("DeviceLock", {}), ("ProfileList", {}))}
        trace = mac.sync()
        assert trace.outcome == "synced", trace.render()
        results = env.results(mac.udid)
        assert results[sent["DeviceInformation"]]["result"]["QueryResponses"] == {"UDID": mac.udid,
                                                                                 "SerialNumber": mac.serial}
        assert {results[sent[rt]]["status"] for rt in ("InstalledApplicationList", "RestartDevice")} == \
            {"Acknowledged"}
        # RestartDevice left it waiting for its first unlock: ProfileList is one of the commands that never wait
        assert results[sent["ProfileList"]]["status"] == "Acknowledged"


# -- every command User Enrollment forbids, on each platform ----------------------------------------------------------
@pytest.mark.parametrize("family, os_name", [("iPhone", "iOS"), ("iPad", "iPadOS"), ("Mac", "macOS"),
                                             ("Vision", "visionOS")])
def test_user_enrollment_refuses_every_forbidden_command_with_the_documented_error(simple, family, os_name):
    device = simple.enrolled(model_family=family)
    eid = device.enrollment.enrollment_id
    sent = {simple.queue(device, rt, Identifier="test.mdmlab.chat", UnlockToken="x"): rt
            for rt in FORBIDDEN_UE[os_name]}
    apps_before = {a.bundle_id: a.managed for a in device.contents.apps.values()}
    trace = device.sync()
    assert trace.outcome == "commands-failed", trace.render()
    assert trace.explanation.startswith(f"{len(sent)} of {len(sent)} command(s) failed"), trace.explanation
    results = simple.results(eid)
    assert set(sent) == set(results)
    for uuid, request_type in sent.items():
        assert results[uuid]["status"] == "Error", (request_type, results[uuid])
        assert results[uuid]["error_chain"] == [{
            "ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
            "LocalizedDescription": f"“{request_type}” is not a valid request type.",
            "USEnglishDescription": f"“{request_type}” is not a valid request type."}]
    assert device.enrollment is not None and not device.locked
    assert {a.bundle_id: a.managed for a in device.contents.apps.values()} == apps_before


# -- unenrollment, both sides -----------------------------------------------------------------------------------------
def _with_work_data(env: Running, device: Device) -> None:
    env.queue(device, "InstallApplication", iTunesStoreID=1_660_000_002, Options={"PurchaseMethod": 1})
    env.queue(device, "InstallProfile", Profile="mail")
    trace = device.sync()
    assert trace.outcome == "synced", trace.render()
    assert device.contents.apps["test.mdmlab.work-notes"].managed
    assert device.contents.vault.open("mail", f"{'test.mdmlab.mdm.lab.test.mail'}/mail")


def _assert_unenrolled(env: Running, device: Device, store: DeviceStore, eid: str, keys: list[bytes]) -> None:
    assert device.enrollment is None and device.contents.vault is None
    assert set(device.contents.apps) == {"test.mdmlab.chat"}  # the person's app stays, the managed one went
    assert not any(p.managed for p in device.contents.profiles.values())
    assert device.contents.personal["notes"][0]["text"] == "Holiday packing list"
    store.save(device)
    stored = b"".join(p.read_bytes() for p in sorted(store.path.parent.glob("devices.db*")))
    assert keys and not any(key in stored for key in keys)
    assert env.lab.mdm.enrollment(eid)["status"] == "checked-out"
    checkout = [e for e in env.lab.events.query(limit=5000) if e["summary"].startswith(f"CheckOut {eid}")]
    assert checkout and checkout[-1]["status"] == 200


def test_unenrollment_by_the_person(simple, tmp_path):
    store = DeviceStore(tmp_path)
    phone = simple.enrolled(os_version="17.5")
    _with_work_data(simple, phone)
    eid, keys = phone.enrollment.enrollment_id, list(phone.contents.vault.keys.values())
    store.save(phone)
    trace = phone.unenroll()
    assert trace.outcome == "unenrolled", trace.render()
    _assert_unenrolled(simple, phone, store, eid, keys)
    store.close()


def test_unenrollment_by_the_mdm(oauth, tmp_path):
    store = DeviceStore(tmp_path)
    phone = oauth.enrolled()
    _with_work_data(oauth, phone)
    eid, keys = phone.enrollment.enrollment_id, list(phone.contents.vault.keys.values())
    store.save(phone)
    uuid = oauth.api("POST", f"/mdm/enrollments/{eid}/unenroll")["command_uuid"]
    trace = phone.sync()
    assert trace.outcome == "unenrolled", trace.render()
    assert oauth.results(eid)[uuid]["status"] == "Acknowledged"
    _assert_unenrolled(oauth, phone, store, eid, keys)
    store.close()


# -- backup and restore ------------------------------------------------------------------------------------------------
def test_backup_and_restore_bring_back_personal_data_not_the_enrollment(simple, tmp_path):
    store = DeviceStore(tmp_path)
    phone = simple.enrolled()
    _with_work_data(simple, phone)
    store.save(phone)
    backup_id = store.save_backup(phone)
    eid = phone.enrollment.enrollment_id
    restored = store.load(phone.device_id, simple.network)
    restored.restore(store.backup(backup_id))
    store.save(restored)
    again = store.load(phone.device_id, simple.network)
    assert again.enrollment is None and again.contents.vault is None
    assert set(again.contents.apps) == {"test.mdmlab.chat"}
    assert again.contents.personal["notes"][0]["text"] == "Holiday packing list"
    assert simple.lab.mdm.enrollment(eid)["status"] == "enrolled"  # the MDM was not told: no CheckOut
    trace = again.enroll(IDENTIFIER, PASSWORD)
    assert trace.outcome == "enrolled" and again.enrollment.enrollment_id != eid, trace.render()
    for made in (restored, again):
        made.close()
    store.close()


# -- federated sign-in and Enrollment SSO ----------------------------------------------------------------------------
def test_federated_oauth2_sign_in_goes_through_the_idp_host(tmp_path):
    with running("auth-oauth2-federated", tmp_path) as env:
        after = env.lab.events.last_id()
        env.enrolled()
        idp = [e for e in env.lab.events.query(after=after, limit=5000)
               if e["kind"] == "http" and e["host"] == "idp.betterbag.test"]
        assert [(e["method"], e["path"], e["status"]) for e in idp] == [("GET", "/authorize", 200),
                                                                          ("POST", "/authorize", 302)]
        dns = [e for e in env.lab.events.query(after=after, limit=5000) if e["kind"] == "dns"]
        assert "idp.betterbag.test" in {e["host"] for e in dns}
        assert ("GET", "/auth/federated/callback", 308) in env.http(after)


def test_enrollment_sso_installs_the_app_and_renews_without_a_password(tmp_path):
    with running("auth-esso", tmp_path) as env:
        phone = env.enrolled()
        app = phone.contents.apps["test.mdmlab.enrollment-sso"]
        assert app.managed and app.source == "esso"
        assert any(p.kind == "esso" for p in phone.contents.profiles.values())
        env.lab.mdm.expire_tokens(enrollment_id=phone.enrollment.enrollment_id)
        env.lab.faults.set("refresh-rejected")
        phone.password = None  # nobody types anything: the SSO app's web session signs in
        mid = env.lab.events.last_id()
        trace = phone.sync()
        assert trace.outcome == "synced", trace.render()
        assert ("GET", "/oauth2/authorize", 308) in env.http(mid)  # single sign-on, no page shown
        unenrolled = phone.unenroll()
        assert unenrolled.outcome == "unenrolled" and "test.mdmlab.enrollment-sso" not in phone.contents.apps


def test_an_sso_app_installed_by_the_person_stops_enrollment_sso(tmp_path):
    with running("auth-esso", tmp_path) as env:
        phone = env.device(personal_apps=("test.mdmlab.chat", "test.mdmlab.enrollment-sso"))
        trace = phone.enroll(IDENTIFIER, PASSWORD)
        assert (trace.outcome, trace.diagnosis) == ("failed", "esso-app-preinstalled"), trace.render()
        assert "has been installed on the device" in trace.explanation
        mac = env.enrolled(model_family="Mac", os_version="15.2")  # no Enrollment SSO on macOS: header ignored
        assert "test.mdmlab.enrollment-sso" not in mac.contents.apps


# -- the command set, NotNow, PKCE, a forgotten enrollment ----------------------------------------------------------
def test_the_required_command_set_round_trips_with_results_stored_at_the_mdm(simple):
    phone = simple.enrolled()
    eid = phone.enrollment.enrollment_id
    sent = [simple.queue(phone, rt, **params) for rt, params in (
        ("DeviceInformation", {"Queries": ["OSVersion", "SerialNumber"]}), ("InstallProfile", {"Profile": "wifi"}),
        ("ProfileList", {}), ("InstallApplication", {"iTunesStoreID": 1_660_000_004, "Options": {"PurchaseMethod": 1}}),
        ("ManagedApplicationList", {}), ("RemoveApplication", {"Identifier": "test.mdmlab.expenses"}),
        ("RemoveProfile", {"Identifier": "test.mdmlab.mdm.lab.test.wifi"}), ("InstalledApplicationList", {}))]
    trace = phone.sync()
    assert trace.outcome == "synced", trace.render()
    results = simple.results(eid)
    assert [results[u]["status"] for u in sent] == ["Acknowledged"] * len(sent)
    info, _, profiles, installed, managed, _, _, apps = (results[u]["result"] for u in sent)
    assert info["QueryResponses"] == {"OSVersion": "26.1"}  # no SerialNumber for a User Enrollment
    assert {p["PayloadIdentifier"] for p in profiles["ProfileList"]} == {
        "test.mdmlab.mdm.lab.test.enrollment", "test.mdmlab.mdm.lab.test.wifi"}
    assert installed["Identifier"] == "test.mdmlab.expenses"
    assert managed["ManagedApplicationList"]["test.mdmlab.expenses"]["Status"] == "Managed"
    assert apps["InstalledApplicationList"] == []  # removed again; the person's own app is not listed
    assert all(results[u]["result"]["EnrollmentID"] == eid for u in sent)


def test_a_locked_device_answers_not_now_and_runs_the_command_after_the_unlock(simple):
    phone = simple.enrolled()
    eid = phone.enrollment.enrollment_id
    simple.queue(phone, "DeviceLock")
    install = simple.queue(phone, "InstallApplication", iTunesStoreID=1_660_000_002, Options={"PurchaseMethod": 1})
    after = simple.lab.events.last_id()
    assert phone.sync().outcome == "synced"
    assert simple.results(eid)[install]["status"] == "NotNow"
    assert [(m, s) for m, p, s in simple.http(after)] == [("PUT", 200)] * 3  # Idle, Ack (→ install), NotNow (→ end)
    phone.unlock()
    assert phone.sync().outcome == "synced"
    assert simple.results(eid)[install]["status"] == "Acknowledged"


def test_pkce_is_accepted_when_the_device_sends_it(oauth):
    after = oauth.lab.events.last_id()
    phone = oauth.enrolled(pkce=True)
    authorize = next(e for e in oauth.lab.events.query(after=after, limit=5000) if e["path"] == "/oauth2/authorize")
    assert "code_challenge_method=S256" in authorize["detail"]["query"]
    assert phone.enrollment.credentials.method == "apple-oauth2"


def test_an_enrollment_the_mdm_forgot_is_removed_from_the_device(tmp_path):
    with running("betterbag", tmp_path) as env:
        phone = env.enrolled()
        env.lab.reset()  # the MDM's state is gone: tokens and enrollments
        mid = env.lab.events.last_id()
        trace = phone.sync()
        assert trace.outcome == "unenrolled", trace.render()
        assert env.http(mid) == [("PUT", "/mdm/server", 401), ("GET", "/auth/web", 200), ("POST", "/auth/web", 308),
                                 ("PUT", "/mdm/server", 403)]
        assert phone.enrollment is None and phone.contents.vault is None
        assert any(s.code == "unrecognized-device" for s in trace.steps)
