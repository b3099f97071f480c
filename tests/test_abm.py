"""The ABM/ASM mock: domains, accounts, default assignment, Device Assignment API, fallback, admin page."""
from __future__ import annotations

import hashlib
import json
import stat
from urllib.parse import parse_qs, urlsplit

import pytest

from lab import oauth1
from lab.dispatch import DEVICE_KEY, STAGE_KEY, SUMMARY_KEY
from lab.faults import FaultBoard, catalogue
from lab.scenario import ABMServer
from mocks.abm import FAULTS, ABMSetup, ABMState, create_apps
from mocks.abm.errors import APIError

HOSTS = {"fallback": "axm-adm-enroll.lab.test", "api": "mdmenrollment.lab.test", "admin": "business.lab.test"}
SESSION_URL = f"https://{HOSTS['api']}/session"
PROFILE = "/account-driven-enrollment/profile"
WELL_KNOWN = "/.well-known/com.apple.remotemanagement"
DISCOVERY_URL = "https://mdm.lab.test/.well-known/com.apple.remotemanagement?org=betterbag"
ELIZA = "eliza@betterbag.test"
T0 = 1_750_000_000.0


def make_setup(**overrides) -> ABMSetup:
    values = dict(organization="BetterBag", kind="business", domains=("betterbag.test", "bb-eu.test"),
                  accounts=(ELIZA, "Noah@bb-eu.test"),
                  servers=(ABMServer("Lab MDM", ("iPhone", "iPad", "Mac"), True), ABMServer("Other MDM", ("AppleTV",),
                                                                                             False)),
                  session_ttl=1800, hosts=HOSTS)
    return ABMSetup(**{**values, **overrides})


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class FakeDNS:
    """The TXT records the lab DNS would answer; a name mapped to an exception makes the lookup fail."""

    def __init__(self):
        self.records: dict[str, object] = {}
        self.asked: list[str] = []

    def __call__(self, name):
        self.asked.append(name)
        value = self.records.get(name, [])
        if isinstance(value, Exception):
            raise value
        return value


class Recorder:
    """Keeps the WSGI environ of each request, where handlers leave their timeline labels."""

    def __init__(self, app):
        self.inner, app.wsgi_app, self.environs = app.wsgi_app, self, []

    def __call__(self, environ, start_response):
        self.environs.append(environ)
        return self.inner(environ, start_response)

    @property
    def last(self) -> tuple:
        environ = self.environs[-1]
        return environ.get(STAGE_KEY), environ.get(DEVICE_KEY), environ.get(SUMMARY_KEY)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dns():
    return FakeDNS()


@pytest.fixture
def open_state(tmp_path, dns, clock):
    made = []

    def make(setup=None) -> ABMState:
        state = ABMState(setup or make_setup(), tmp_path / "abm", dns, clock=clock)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


@pytest.fixture
def state(open_state):
    return open_state()


@pytest.fixture
def apps(state):
    built = create_apps(state)
    for app in built.values():
        app.recorder = Recorder(app)
    return built


@pytest.fixture
def api(apps):
    return apps["api"].test_client()


@pytest.fixture
def device(apps):
    return apps["fallback"].test_client()


@pytest.fixture
def admin(apps):
    return apps["admin"].test_client()


def signed(state, server="Lab MDM", *, nonce=None, timestamp=None, url=SESSION_URL):
    token = state.server_token(server)
    return oauth1.authorization_header("GET", url, token["consumer_key"], token["consumer_secret"],
                                       token["access_token"], token["access_secret"], nonce=nonce,
                                       timestamp=int(state.clock()) if timestamp is None else timestamp)


def open_session(api, state, server="Lab MDM") -> dict:
    response = api.get("/session", base_url=f"https://{HOSTS['api']}", headers={"Authorization": signed(state, server)})
    assert response.status_code == 200, response.data
    return {"X-ADM-Auth-Session": response.get_json()["auth_session_token"]}


def call(api, method, path, headers=None, **kwargs):
    return api.open(path, method=method, base_url=f"https://{HOSTS['api']}", headers=headers or {}, **kwargs)


def register(api, state, url=DISCOVERY_URL, server="Lab MDM"):
    response = call(api, "POST", PROFILE, open_session(api, state, server), json={"mdm_service_discovery_url": url})
    assert response.status_code == 200, response.data


def ask(device, identifier=ELIZA, family="iPhone"):
    query = {k: v for k, v in (("user-identifier", identifier), ("model-family", family)) if v is not None}
    return device.get(WELL_KNOWN, query_string=query, base_url=f"https://{HOSTS['fallback']}")


def publish(dns, state, domain="betterbag.test"):
    dns.records[domain] = ["v=spf1 -all", state.verification_record(domain)]
    assert state.verify_domain(domain)


def domain(state, name="betterbag.test") -> dict:
    return next(d for d in state.snapshot()["domains"] if d["name"] == name)


def assert_plain(response, status, code):
    assert (response.status_code, response.data.decode()) == (status, code)
    assert response.mimetype == "text/plain"


# -- domains -------------------------------------------------------------------------------------------------
def test_verification_record_is_random_per_domain_and_stable(open_state):
    state = open_state()
    first, second = state.verification_record("betterbag.test"), state.verification_record("BB-EU.test")
    assert first.startswith("apple-domain-verification=") and len(first) > 40 and first != second
    state.close()
    assert open_state().verification_record("betterbag.test") == first


def test_domain_unverified_until_its_txt_record_is_in_dns(state, dns):
    assert not state.verify_domain("betterbag.test")
    dns.records["betterbag.test"] = ["apple-domain-verification=someone-else"]
    assert not state.verify_domain("betterbag.test")
    dns.records["betterbag.test"] = [f'"{state.verification_record("betterbag.test")}"']
    assert state.verify_domain("betterbag.test")
    assert dns.asked[-1] == "betterbag.test"
    assert domain(state)["verified"] and not domain(state, "bb-eu.test")["verified"]
    assert domain(state)["last_checked"] == "2025-06-15T15:06:40Z"


def test_dns_failure_or_removed_record_leaves_the_domain_unverified(state, dns):
    publish(dns, state)
    dns.records["betterbag.test"] = TimeoutError("lab DNS did not answer")
    assert not state.verify_domain("betterbag.test")
    assert not domain(state)["verified"] and "DNS lookup failed" in domain(state)["last_check"]
    publish(dns, state)
    dns.records["betterbag.test"] = []
    assert not state.verify_domain("betterbag.test")
    assert not domain(state)["verified"] and "not found" in domain(state)["last_check"]


def test_verify_unknown_domain_is_refused(state):
    with pytest.raises(Exception) as err:
        state.verify_domain("example.com")
    assert err.value.code == "unknown-domain"


# -- setup and secrets -----------------------------------------------------------------------------------------
def test_server_token_is_created_once_and_persisted(open_state, tmp_path):
    state = open_state()
    token = state.server_token("Lab MDM")
    assert sorted(token) == ["access_secret", "access_token", "access_token_expiry", "consumer_key",
                             "consumer_secret"]
    assert token["consumer_key"].startswith("CK_") and token["consumer_secret"].startswith("CS_")
    assert token["access_token"].startswith("AT_") and token["access_secret"].startswith("AS_")
    assert token["access_token_expiry"] == "2026-06-15T15:06:40Z"
    assert token != state.server_token("Other MDM")
    assert state.server_token("Lab MDM") == token
    state.close()
    assert open_state().server_token("Lab MDM") == token
    assert stat.S_IMODE((tmp_path / "abm" / "abm.db").stat().st_mode) == 0o600


def test_snapshot_carries_no_secrets(state):
    text = json.dumps(state.snapshot())
    for server in ("Lab MDM", "Other MDM"):
        for value in state.server_token(server).values():
            assert value not in text or value.endswith("Z")
    snap = state.snapshot()
    assert snap["accounts"] == [ELIZA, "noah@bb-eu.test"]
    assert snap["default_assignments"] == {"iPhone": "Lab MDM", "iPad": "Lab MDM", "Mac": "Lab MDM",
                                           "AppleTV": "Other MDM", "RealityDevice": None, "Watch": None}


@pytest.mark.parametrize("overrides", [
    {"kind": "enterprise"},
    {"servers": (ABMServer("A", ("iPhone",)), ABMServer("B", ("iPhone",)))},
    {"servers": (ABMServer("A", ("Toaster",)),)},
])
def test_inconsistent_setup_fails_at_construction(tmp_path, dns, overrides):
    with pytest.raises(ValueError):
        ABMState(make_setup(**overrides), tmp_path, dns)


# -- device-facing fallback ------------------------------------------------------------------------------------
@pytest.mark.parametrize("identifier, family, status, reason", [
    (None, "iPhone", 400, "malformed-identifier"),
    ("eliza", "iPhone", 400, "malformed-identifier"),
    ("eliza@betterbag@test", "iPhone", 400, "malformed-identifier"),
    ("@betterbag.test", "iPhone", 400, "malformed-identifier"),
    (ELIZA, "Toaster", 400, "unknown-model-family"),
    (ELIZA, None, 400, "unknown-model-family"),
    ("eliza@elsewhere.test", "iPhone", 404, "domain-not-verified"),
    ("noah@bb-eu.test", "iPhone", 404, "domain-not-verified"),  # an org domain, but not verified
    ("ghost@betterbag.test", "iPhone", 404, "unknown-managed-account"),
    (ELIZA, "Watch", 404, "no-default-assignment"),
    (ELIZA, "AppleTV", 404, "no-service-discovery-url"),  # Other MDM registered nothing
])
def test_fallback_refusals(state, dns, api, device, apps, identifier, family, status, reason):
    publish(dns, state)
    register(api, state)
    response = ask(device, identifier, family)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == reason and body["message"]
    if status == 404:
        assert body["reason"] == reason
    stage, who, summary = apps["fallback"].recorder.last
    assert (stage, who) == ("discovery", identifier) and reason in summary


def test_fallback_checks_in_order(state, dns, api, device):
    assert ask(device, "ghost@betterbag.test", "Watch").get_json()["reason"] == "domain-not-verified"
    publish(dns, state)
    assert ask(device, "ghost@betterbag.test", "Watch").get_json()["reason"] == "unknown-managed-account"
    assert ask(device, ELIZA, "Watch").get_json()["reason"] == "no-default-assignment"
    assert ask(device, ELIZA, "iPhone").get_json()["reason"] == "no-service-discovery-url"
    register(api, state)
    assert ask(device, ELIZA, "iPhone").status_code == 302


def test_fallback_redirects_to_the_default_servers_url_with_the_query(state, dns, api, device, apps):
    publish(dns, state)
    register(api, state)
    response = ask(device, "Eliza@BetterBag.test", "Mac")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location == DISCOVERY_URL + "&user-identifier=Eliza@BetterBag.test&model-family=Mac"
    assert parse_qs(urlsplit(location).query) == {"org": ["betterbag"], "user-identifier": ["Eliza@BetterBag.test"],
                                                  "model-family": ["Mac"]}
    stage, who, summary = apps["fallback"].recorder.last
    assert (stage, who) == ("discovery", "Eliza@BetterBag.test") and "Mac" in summary and "302" in summary


def test_fallback_follows_the_default_assignment_per_device_type(state, dns, api, device):
    publish(dns, state)
    register(api, state)
    register(api, state, "https://other.lab.test/wk", server="Other MDM")
    assert ask(device, family="AppleTV").headers["Location"].startswith("https://other.lab.test/wk?user-identifier=")
    state.set_default_assignments({"iPhone": "Other MDM"})
    assert ask(device, family="iPhone").headers["Location"].startswith("https://other.lab.test/wk?")
    assert ask(device, family="iPad").headers["Location"].startswith("https://mdm.lab.test/")


def test_fallback_accepts_an_encoded_at_sign(state, dns, api, device):
    publish(dns, state)
    register(api, state)
    response = device.get(WELL_KNOWN + "?user-identifier=eliza%40betterbag.test&model-family=iPhone",
                          base_url=f"https://{HOSTS['fallback']}")
    assert response.status_code == 302 and "user-identifier=eliza@betterbag.test" in response.headers["Location"]


def test_unknown_path_on_the_fallback_host_is_a_clear_404(device):
    response = device.get("/mdmBaseURL", base_url=f"https://{HOSTS['fallback']}")
    assert response.status_code == 404 and "/mdmBaseURL" in response.get_json()["message"]


# -- Device Assignment API: session ----------------------------------------------------------------------------
def test_session_then_account(state, api, apps):
    headers = open_session(api, state)
    assert apps["api"].recorder.last[0] == "abm-api"
    response = call(api, "GET", "/account", headers)
    assert response.status_code == 200
    account = response.get_json()
    assert account["server_name"] == "Lab MDM" and account["org_name"] == "BetterBag"
    assert account["org_type"] == "org" and account["org_version"] == "v2"
    for key in ("server_uuid", "admin_id", "facilitator_id", "org_email", "org_phone", "org_address", "org_id"):
        assert account[key]
    assert {u["uri"] for u in account["urls"]} >= {"/session", "/account", PROFILE}
    assert apps["api"].recorder.last[0] == "abm-api"


def test_school_account_is_edu(open_state):
    state = open_state(make_setup(kind="school"))
    client = create_apps(state)["api"].test_client()
    account = call(client, "GET", "/account", open_session(client, state)).get_json()
    assert account["org_type"] == "edu" and state.snapshot()["program"] == "Apple School Manager"


def test_session_tokens_are_stored_hashed(state, api, tmp_path):
    token = open_session(api, state)["X-ADM-Auth-Session"]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "abm").iterdir())
    assert token.encode() not in stored
    assert state.store.one("SELECT 1 FROM sessions WHERE token_hash = ?", (hashlib.sha256(token.encode()).hexdigest(),))


def test_session_expires_after_its_ttl(state, api, clock):
    headers = open_session(api, state)
    clock.now += 1799
    assert call(api, "GET", "/account", headers).status_code == 200
    clock.now += 1
    assert_plain(call(api, "GET", "/account", headers), 401, "UNAUTHORIZED")
    assert call(api, "GET", "/account", open_session(api, state)).status_code == 200


@pytest.mark.parametrize("mangle", [
    lambda state: None,
    lambda state: "Bearer nope",
    lambda state: signed(state).replace('realm="ADM"', 'realm="Other"'),
    lambda state: signed(state, timestamp=int(T0) - 301),
    lambda state: signed(state, timestamp=int(T0) + 301),
    lambda state: signed(state, url="https://mdmenrollment.lab.test/account"),
    lambda state: oauth1.authorization_header("GET", SESSION_URL, "CK_x", "CS_x", "AT_x", "AS_x",
                                              timestamp=int(T0)),
])
def test_session_refusals_are_401_unauthorized(state, api, apps, mangle):
    header = mangle(state)
    response = call(api, "GET", "/session", {"Authorization": header} if header else {})
    assert_plain(response, 401, "UNAUTHORIZED")
    assert apps["api"].recorder.last[0] == "abm-api"


def test_session_refuses_a_reused_nonce(state, api, apps):
    header = signed(state, nonce="once")
    assert call(api, "GET", "/session", {"Authorization": header}).status_code == 200
    assert_plain(call(api, "GET", "/session", {"Authorization": header}), 401, "UNAUTHORIZED")
    assert "reused-nonce" in apps["api"].recorder.last[2]


def test_expired_server_token_is_refused(state, api, clock):
    clock.now += 366 * 86400
    assert_plain(call(api, "GET", "/session", {"Authorization": signed(state)}), 401, "UNAUTHORIZED")


def test_session_signed_for_the_listeners_port(state, api):
    url = f"https://{HOSTS['api']}:8443/session"
    response = api.get("/session", base_url=f"https://{HOSTS['api']}:8443",
                       headers={"Authorization": signed(state, url=url)})
    assert response.status_code == 200


@pytest.mark.parametrize("method, path", [("GET", "/account"), ("GET", PROFILE), ("POST", PROFILE),
                                          ("DELETE", PROFILE)])
@pytest.mark.parametrize("headers", [{}, {"X-ADM-Auth-Session": "made-up"}])
def test_calls_need_a_valid_session(api, method, path, headers):
    assert_plain(call(api, method, path, headers), 401, "UNAUTHORIZED")


# -- Device Assignment API: account-driven enrollment profile ------------------------------------------------
def test_register_fetch_remove_discovery_url(state, api, clock, apps):
    headers = open_session(api, state)
    assert_plain(call(api, "GET", PROFILE, headers), 404, "NOT_FOUND")
    clock.now += 60
    response = call(api, "POST", PROFILE, {**headers, "Content-Type": "application/json;charset=UTF8"},
                    data=json.dumps({"mdm_service_discovery_url": DISCOVERY_URL}))
    assert response.status_code == 200
    stage, _, summary = apps["api"].recorder.last
    assert stage == "abm-api" and DISCOVERY_URL in summary
    fetched = call(api, "GET", PROFILE, headers)
    assert fetched.status_code == 200
    assert fetched.get_json() == {"mdm_service_discovery_url": DISCOVERY_URL,
                                  "last_updated_timestamp": "2025-06-15T15:07:40Z"}
    assert call(api, "DELETE", PROFILE, headers).status_code == 200
    assert_plain(call(api, "GET", PROFILE, headers), 404, "NOT_FOUND")
    assert call(api, "DELETE", PROFILE, headers).status_code == 200


def test_url_is_recorded_for_the_server_owning_the_token(state, api):
    register(api, state, "https://other.lab.test/wk", server="Other MDM")
    servers = {s["name"]: s for s in state.snapshot()["servers"]}
    assert servers["Other MDM"]["mdm_service_discovery_url"] == "https://other.lab.test/wk"
    assert servers["Lab MDM"]["mdm_service_discovery_url"] is None
    assert_plain(call(api, "GET", PROFILE, open_session(api, state)), 404, "NOT_FOUND")


@pytest.mark.parametrize("body, code", [
    (b"{}", "MDM_SERVICE_DISCOVERY_URL_REQUIRED"),
    (b'{"mdm_service_discovery_url": null}', "MDM_SERVICE_DISCOVERY_URL_REQUIRED"),
    (b'{"mdm_service_discovery_url": ""}', "MDM_SERVICE_DISCOVERY_URL_REQUIRED"),
    (b'{"mdm_service_discovery_url": "http://mdm.lab.test/wk"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": "mdm.lab.test/wk"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": "https:///wk"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": "https://mdm.lab.test:99999/wk"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": "https://mdm lab.test/wk"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": 42}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b'{"mdm_service_discovery_url": "https://mdm.lab.test/wk#x"}', "MDM_SERVICE_DISCOVERY_URL_NOT_VALID"),
    (b"", "MALFORMED_REQUEST_BODY"),
    (b"{not json", "MALFORMED_REQUEST_BODY"),
    (b"\xff\xfe", "MALFORMED_REQUEST_BODY"),
    (b'["https://mdm.lab.test/wk"]', "MALFORMED_REQUEST_BODY"),
])
def test_register_errors(state, api, apps, body, code):
    response = call(api, "POST", PROFILE, {**open_session(api, state), "Content-Type": "application/json"},
                    data=body)
    assert_plain(response, 400, code)
    assert apps["api"].recorder.last[0] == "abm-api" and code in apps["api"].recorder.last[2]
    assert state.snapshot()["servers"][0]["mdm_service_discovery_url"] is None


def test_fault_org_not_supported_for_the_next_profile_calls(tmp_path, dns, clock):
    board = FaultBoard(catalogue(FAULTS), {"abm": {HOSTS["api"]}}, HOSTS["api"])
    state = ABMState(make_setup(), tmp_path, dns, clock=clock, faults=board)
    api = create_apps(state)["api"].test_client()
    headers = open_session(api, state)
    board.set("org-not-supported", times=3)
    assert_plain(call(api, "POST", PROFILE, headers, json={"mdm_service_discovery_url": DISCOVERY_URL}), 400,
                 "ORG_NOT_SUPPORTED")
    assert_plain(call(api, "GET", PROFILE, headers), 400, "ORG_NOT_SUPPORTED")
    assert_plain(call(api, "DELETE", PROFILE, headers), 400, "ORG_NOT_SUPPORTED")
    assert call(api, "POST", PROFILE, headers, json={"mdm_service_discovery_url": DISCOVERY_URL}).status_code == 200
    board.set("org-not-supported")
    assert_plain(call(api, "GET", PROFILE, headers), 400, "ORG_NOT_SUPPORTED")
    board.clear("org-not-supported")
    assert call(api, "GET", PROFILE, headers).status_code == 200
    state.close()


# -- admin page ------------------------------------------------------------------------------------------------
def page(admin, path="/"):
    response = admin.get(path, base_url=f"https://{HOSTS['admin']}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    return response.data.decode()


def post(admin, path, data):
    return admin.post(path, data=data, base_url=f"https://{HOSTS['admin']}")


def test_admin_page_shows_the_organization(state, api, admin):
    register(api, state)
    html = page(admin)
    assert "Apple Business Manager" in html and "BetterBag" in html
    assert state.verification_record("betterbag.test") in html and "Not verified" in html
    assert ELIZA in html and "noah@bb-eu.test" in html
    assert "Lab MDM" in html and "Other MDM" in html and DISCOVERY_URL.replace("&", "&amp;") in html
    assert '<option value="Other MDM" selected>' in html  # AppleTV
    assert state.server_token("Lab MDM")["consumer_secret"] not in html


def test_admin_verifies_a_domain(state, dns, admin, apps):
    response = post(admin, "/domains/verify", {"domain": "betterbag.test"})
    assert response.status_code == 303 and "notice=domain-not-verified" in response.headers["Location"]
    assert "could not be verified" in page(admin, response.headers["Location"])
    dns.records["betterbag.test"] = [state.verification_record("betterbag.test")]
    response = post(admin, "/domains/verify", {"domain": "BetterBag.test"})
    assert response.status_code == 303 and "notice=domain-verified" in response.headers["Location"]
    assert apps["admin"].recorder.last[0] == "abm-admin"
    html = page(admin, response.headers["Location"])
    assert "betterbag.test is verified." in html and "Verified</span>" in html
    assert domain(state)["verified"]


@pytest.mark.parametrize("path, data, reason", [
    ("/domains/verify", {}, "missing-field"),
    ("/domains/verify", {"domain": "example.com"}, "unknown-domain"),
    ("/accounts/add", {"identifier": ""}, "missing-field"),
    ("/accounts/add", {"identifier": "not-an-email"}, "malformed-identifier"),
    ("/accounts/add", {"identifier": "mallory@example.com"}, "foreign-domain"),
    ("/accounts/add", {"identifier": "ELIZA@betterbag.test"}, "account-exists"),
    ("/accounts/remove", {"identifier": "ghost@betterbag.test"}, "unknown-account"),
    ("/assignments", {}, "nothing-to-save"),
    ("/assignments", {"iPhone": "Nope MDM"}, "unknown-server"),
    ("/assignments", {"Toaster": "Lab MDM"}, "unknown-model-family"),
])
def test_admin_rejects_bad_input(state, admin, path, data, reason):
    before = state.snapshot()
    response = post(admin, path, data)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert f'<code id="reason">{reason}</code>' in response.data.decode()
    assert state.snapshot() == before


def test_admin_adds_and_removes_accounts(state, admin):
    response = post(admin, "/accounts/add", {"identifier": " Zoe@BB-EU.test "})
    assert response.status_code == 303 and response.headers["Location"].startswith("/?notice=account-added")
    assert "zoe@bb-eu.test" in state.accounts()
    assert "zoe@bb-eu.test was added." in page(admin, response.headers["Location"])
    assert post(admin, "/accounts/remove", {"identifier": ELIZA}).status_code == 303
    assert state.accounts() == ["noah@bb-eu.test", "zoe@bb-eu.test"]


def test_admin_sets_the_default_device_assignment(state, dns, api, device, admin):
    publish(dns, state)
    register(api, state)
    register(api, state, "https://other.lab.test/wk", server="Other MDM")
    form = {family: "" for family in ("iPad", "Mac", "AppleTV", "RealityDevice")}
    response = post(admin, "/assignments", {**form, "iPhone": "Other MDM", "Watch": "Lab MDM"})
    assert response.status_code == 303 and "notice=assignments-saved" in response.headers["Location"]
    assert state.snapshot()["default_assignments"] == {"iPhone": "Other MDM", "iPad": None, "Mac": None,
                                                       "AppleTV": None, "RealityDevice": None, "Watch": "Lab MDM"}
    assert ask(device, family="iPhone").headers["Location"].startswith("https://other.lab.test/wk?")
    assert ask(device, family="Watch").headers["Location"].startswith("https://mdm.lab.test/")
    assert ask(device, family="Mac").get_json()["reason"] == "no-default-assignment"
    assert '<option value="Other MDM" selected>Other MDM</option>' in page(admin)


# -- persistence -------------------------------------------------------------------------------------------------
def test_state_survives_a_restart(open_state, dns, clock):
    state = open_state()
    apps = create_apps(state)
    publish(dns, state)
    state.add_account("zoe@betterbag.test")
    state.remove_account("noah@bb-eu.test")
    state.set_default_assignments({"Watch": "Lab MDM", "iPad": None})
    register(apps["api"].test_client(), state)
    session = open_session(apps["api"].test_client(), state)
    snapshot, token = state.snapshot(), state.server_token("Lab MDM")
    state.close()

    again = open_state()
    assert again.snapshot() == snapshot and again.server_token("Lab MDM") == token
    assert again.accounts() == [ELIZA, "zoe@betterbag.test"]
    client = create_apps(again)["api"].test_client()
    assert call(client, "GET", PROFILE, session).get_json()["mdm_service_discovery_url"] == DISCOVERY_URL
    device = create_apps(again)["fallback"].test_client()
    assert ask(device, family="Watch").status_code == 302


@pytest.mark.parametrize("concealed", [False, True])
def test_fault_org_not_supported_is_named_only_outside_exercise_mode(tmp_path, dns, clock, concealed):
    board = FaultBoard(catalogue(FAULTS), {"abm": {HOSTS["api"]}}, HOSTS["api"], concealed=concealed)
    state = ABMState(make_setup(), tmp_path, dns, clock=clock, faults=board)
    board.set("org-not-supported")
    with pytest.raises(APIError) as raised:
        state.set_discovery_url(state.snapshot()["servers"][0]["name"],
                                json.dumps({"mdm_service_discovery_url": DISCOVERY_URL}).encode())
    assert raised.value.code == "ORG_NOT_SUPPORTED"
    assert ("org-not-supported" in raised.value.message) is not concealed
    state.close()


def test_fallback_refuses_while_org_not_supported_is_armed_at_run_time(state, dns, api, device):
    publish(dns, state)
    register(api, state)
    state.faults = FaultBoard(catalogue(FAULTS), {"abm": {HOSTS["api"]}}, HOSTS["api"])
    state.faults.set("org-not-supported", times=1)
    for _ in range(2):  # the fallback only looks: the organization stays disabled while the fault is armed
        refused = ask(device)
        assert refused.status_code == 404 and refused.get_json()["reason"] == "org-not-supported"
    state.faults.clear()
    assert ask(device).status_code == 302


# -- the admin site behind the lab's admin gate (F6) -------------------------------------------------------------
ADMIN_ORIGIN = f"https://{HOSTS['admin']}"
ZOE = {"identifier": "zoe@betterbag.test"}


def gated_admin(state, token):
    return create_apps(state, lambda: token)["admin"].test_client()


def test_beyond_loopback_the_admin_site_needs_the_admin_token(state):
    admin = gated_admin(state, "s3cret")
    refused = admin.post("/accounts/add", data=ZOE, base_url=ADMIN_ORIGIN)
    assert refused.status_code == 401 and "zoe@betterbag.test" not in state.accounts()
    assert admin.get("/", base_url=ADMIN_ORIGIN, headers={"Accept": "text/html"}).status_code == 401
    allowed = admin.post("/accounts/add", data=ZOE, base_url=ADMIN_ORIGIN, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 303 and "zoe@betterbag.test" in state.accounts()


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"}, {"Origin": "http://business.lab.test"},
    {"Origin": "https://business.lab.test:8443"}, {"Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_form_cannot_change_abm(state, headers):
    admin = gated_admin(state, None)  # loopback: no token, so the origin check is what stops another site
    response = admin.post("/accounts/remove", data={"identifier": ELIZA}, base_url=ADMIN_ORIGIN, headers=headers)
    assert response.status_code == 403 and ELIZA in state.accounts()


def test_a_browser_change_needs_the_pages_csrf_token(state):
    admin = gated_admin(state, None)
    same_site = {"Origin": ADMIN_ORIGIN}
    without = admin.post("/accounts/add", data=ZOE, base_url=ADMIN_ORIGIN, headers=same_site)
    assert without.status_code == 403 and "zoe@betterbag.test" not in state.accounts()
    form_page = admin.get("/", base_url=ADMIN_ORIGIN).data.decode()
    token = form_page.split('name="csrf_token" value="')[1].split('"')[0]
    response = admin.post("/accounts/add", data={**ZOE, "csrf_token": token}, base_url=ADMIN_ORIGIN,
                          headers=same_site)
    assert response.status_code == 303 and "zoe@betterbag.test" in state.accounts()


def test_admin_pages_cannot_be_framed(state):
    response = gated_admin(state, None).get("/", base_url=ADMIN_ORIGIN)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_the_assignment_form_with_its_csrf_token_saves(state):
    """A browser's form carries the page's CSRF token beside the device types: it is no device type."""
    admin = gated_admin(state, None)
    page = admin.get("/", base_url=ADMIN_ORIGIN).get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = admin.post("/assignments", data={"iPhone": "Lab MDM", "csrf_token": token}, base_url=ADMIN_ORIGIN,
                          headers={"Origin": ADMIN_ORIGIN})
    assert response.status_code < 400, response.get_data(as_text=True)[:300]
    assert state.default_assignments()["iPhone"] == "Lab MDM"
