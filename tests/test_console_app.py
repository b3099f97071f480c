"""The console app (lab/console) in-process with Flask's test client, on a real lab: the control API's rules,
the admin token, cross-origin refusals, reset, the CA profile, the dashboard's pages and the SSE generator."""
from __future__ import annotations

import json
import plistlib
import re
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from werkzeug.test import Client

from lab import runner
from lab.console import openapi
from lab.console.auth import COOKIE, CSRF_COOKIE, CSRF_HEADER
from tests.conftest import IDENTIFIER, PASSWORD

BASE = "https://localhost"


@pytest.fixture
def app(lab):
    """The console app as mounted now (a reset rebuilds it)."""
    return lab.dispatcher.apps["localhost"][1]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin_token(lab):
    """The lab as if it listened beyond loopback: the console demands this token."""
    lab.admin_token = "t0ken-for-tests-0123456789"
    yield lab.admin_token
    lab.admin_token = None


def get(client, path, **kwargs):
    return client.get(path, base_url=BASE, **kwargs)


def enroll(lab, device, identifier=IDENTIFIER):
    d = device()
    trace = d.enroll(identifier, PASSWORD)
    runner.record_trace(lab.events, trace, d, identifier)
    return trace


# -- the API -----------------------------------------------------------------------------------------------------
def test_health_says_where_the_lab_is_and_its_newest_event(client, lab):
    body = get(client, "/api/health").get_json()
    assert body["status"] == "ok" and body["scenario"] == "betterbag" and body["https_port"] == lab.https_port
    assert body["last_event_id"] >= 1


def test_the_dashboards_hints_name_this_labs_state_dir(app, lab):
    """Issue 11: copied with two labs running, a hint without --state-dir enrolled into the other lab."""
    from flask import render_template

    from lab.console import dashboard
    ctx = dashboard.context(lab, names=("timeline",))
    assert ctx["state_dir_flag"] == f" --state-dir {lab.state_dir}"
    with app.test_request_context("/", base_url=BASE):
        hint = render_template("sections/timeline.html", **{**ctx, "enrollments": []})
    assert f"mdmlab enroll {IDENTIFIER} --state-dir {lab.state_dir}</code>" in hint


def test_a_push_names_the_command_that_reaches_this_lab(lab, device):
    enroll(lab, device)
    eid = next(e["enrollment_id"] for e in reversed(lab.mdm.enrollments()) if e["status"] == "enrolled")
    mark = lab.events.last_id()
    pushed = Client(lab.dispatcher).post(f"/api/mdm/enrollments/{eid}/push", base_url=BASE)  # recorded
    assert pushed.status_code == 200
    [event] = [e for e in lab.events.query(after=mark) if e["path"] and e["path"].endswith("/push")]
    assert f"'mdmlab device sync --state-dir {lab.state_dir}'" in event["summary"]


def test_events_after_limit_and_last(client, lab):
    top = lab.events.last_id()
    assert [e["id"] for e in get(client, f"/api/events?after={top - 3}&limit=2").get_json()] == [top - 2, top - 1]
    newest = get(client, "/api/events?last=3").get_json()
    assert [e["id"] for e in newest] == sorted(e["id"] for e in newest) and len(newest) == 3
    assert newest[-1]["id"] >= top
    # last counts among the events after `after`
    assert [e["id"] for e in get(client, f"/api/events?last=50&after={top - 1}").get_json()][0] == top
    assert get(client, "/api/events?last=0").get_json() == []


def test_events_filter_by_component_and_kind(client):
    dns = get(client, "/api/events?component=dns&last=5").get_json()
    assert dns and {e["component"] for e in dns} == {"dns"} and {e["kind"] for e in dns} == {"dns"}


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=5001", "last=5001", "after=1e3",
                                   "after=99999999999999999999", "limit=%EF%BC%91"])
def test_bad_event_parameters_are_400(client, query):
    response = get(client, f"/api/events?{query}")
    assert response.status_code == 400 and response.get_json()["error"] == "bad-parameter"


def test_one_event_by_id(client, lab):
    top = lab.events.last_id()
    assert get(client, f"/api/events/{top}").get_json()["id"] == top
    for missing in (0, top + 1000, 2**70):
        response = get(client, f"/api/events/{missing}")
        assert response.status_code == 404, missing
        assert response.get_json()["error"] in ("unknown-event", "not-found")


def test_state_and_its_parts(client):
    state = get(client, "/api/state").get_json()
    assert {"org_domain", "mdm", "abm", "faults"} <= set(state)
    assert get(client, "/api/state/abm").get_json() == {"abm": state["abm"]}
    response = get(client, "/api/state/nothing")
    assert response.status_code == 404 and "abm" in response.get_json()["message"]


def test_faults_tell_which_hosts_each_layer_may_target(client, lab):
    body = get(client, "/api/faults").get_json()
    assert body["hosts"]["org-domain"] == ["betterbag.test"]
    assert "mdm.lab.test" in body["hosts"]["tls"] and "console.lab.test" not in body["hosts"]["tls"]
    assert body["default_hosts"]["org-domain"] == "betterbag.test"
    assert {f["name"] for f in body["catalogue"]} == set(lab.faults.catalogue)


@pytest.mark.parametrize("record,message", [
    ({"name": "x.betterbag.test", "type": "A", "value": "not-an-address"}, "not an IP address"),
    ({"name": "x.betterbag.test", "type": "A", "value": "::1"}, "IPv4"),
    ({"name": "x.betterbag.test", "type": "AAAA", "value": "127.0.0.1"}, "IPv6"),
    ({"name": "x.betterbag.test", "type": "AAAA", "value": "fe80::1%eth0"}, "not an IP address"),
    ({"name": "x.betterbag.test", "type": "TXT", "value": "caf\u00e9"}, "printable ASCII"),
    ({"name": "x.betterbag.test", "type": "TXT", "value": "x" * 256}, "printable ASCII"),
    ({"name": "x.betterbag.test", "type": "TXT", "value": "line\nbreak"}, "printable ASCII"),
    ({"name": "x.betterbag.test", "type": "MX", "value": "x"}, "not one of"),
    ({"name": "x..betterbag.test", "type": "TXT", "value": "x"}, "not a DNS name"),
    ({"name": "betterbag.test\n", "type": "TXT", "value": "x"}, "not a DNS name"),
    ({"name": "a" * 64 + ".betterbag.test", "type": "TXT", "value": "x"}, "not a DNS name"),
    ({"name": "example.com", "type": "TXT", "value": "x"}, "outside the lab's zones"),
    ({"name": "x.betterbag.test", "type": "TXT", "value": "x", "ttl": 5}, "unknown ttl"),
    ({"name": "x.betterbag.test", "type": "TXT"}, "value is required"),
])
def test_bad_records_are_refused_with_the_reason(client, record, message):
    response = client.post("/api/dns/records", base_url=BASE, json=record)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "bad-record" and message in response.get_json()["message"]


def test_records_add_and_remove(client, lab):
    record = {"name": "Extra.BetterBag.test.", "type": "TXT", "value": "hello world"}
    assert client.post("/api/dns/records", base_url=BASE, json=record).status_code == 201
    assert {"name": "extra.betterbag.test", "type": "TXT", "value": "hello world"} in lab.zone.listing()
    response = client.delete("/api/dns/records", base_url=BASE, json={"name": "extra.betterbag.test"})
    assert response.get_json() == {"removed": 1, "records": [{"name": "extra.betterbag.test", "type": "TXT",
                                                              "value": "hello world"}]}


def test_requests_without_a_json_body_are_400(client):
    for method, path in (("POST", "/api/faults"), ("POST", "/api/dns/records"), ("DELETE", "/api/dns/records")):
        response = client.open(path, method=method, base_url=BASE, data="name=x",
                               content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400 and response.get_json()["error"] == "bad-json"


def test_unknown_paths_and_methods_are_clear(client):
    response = get(client, "/api/nothing")
    assert response.status_code == 404 and "console has nothing at /api/nothing" in response.get_json()["message"]
    response = client.put("/api/faults", base_url=BASE)
    assert response.status_code == 405 and "DELETE" in response.headers["Allow"]


# -- the OpenAPI document ----------------------------------------------------------------------------------------
def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_openapi_documents_every_route_of_the_api_and_nothing_else(client, app):
    document = get(client, "/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.0")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in ("api", "sse", "openapi", "mdm_api", "exercise_api"):
            routes.setdefault(_flask_path(rule.rule), set()).update(rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: {m.upper() for m in ops} for path, ops in document["paths"].items()}
    assert documented == routes


def test_openapi_enumerations_are_the_labs_own(client, lab):
    document = get(client, "/api/openapi.json").get_json()
    shapes = document["paths"]["/api/faults"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    names = {n for shape in shapes for n in shape["properties"]["name"]["enum"]}
    # every fault of a layer this lab has (betterbag federates nothing: no IdP, so no idp faults)
    assert names == {n for n, spec in lab.faults.catalogue.items() if lab.faults.hosts.get(spec.component)}
    assert names >= {n for n, spec in lab.faults.catalogue.items() if spec.component != "idp"}
    org = next(s for s in shapes if "well-known-404" in s["properties"]["name"]["enum"])
    pattern = re.compile(org["properties"]["host"]["pattern"])
    assert pattern.match("betterbag.test") and pattern.match("BetterBag.Test.") and not pattern.match("mdm.lab.test")
    assert document["servers"][1]["url"] == f"https://localhost:{lab.https_port}"


def test_openapi_name_patterns_agree_with_the_server(client):
    document = get(client, "/api/openapi.json").get_json()
    add = document["paths"]["/api/dns/records"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = re.compile(add["oneOf"][0]["properties"]["name"]["pattern"])
    for good in ("betterbag.test", "a-b.c_d.LAB.test.", "localhost"):
        assert name.match(good), good
    for bad in ("example.com", "a..lab.test", "-a.lab.test", "lab.test.evil"):
        assert not name.match(bad), bad


def test_anycase_pattern():
    assert openapi._anycase("lab.test") == "[lL][aA][bB]\\.[tT][eE][sS][tT]"


# -- admin token and origins ---------------------------------------------------------------------------------------
def test_beyond_loopback_the_api_needs_the_token(client, admin_token):
    response = get(client, "/api/health")
    assert response.status_code == 401 and response.get_json()["error"] == "admin-token-required"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(client, "/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert get(client, "/api/health", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    assert get(client, f"/api/health?token={admin_token}").status_code == 200


def test_beyond_loopback_the_ca_and_static_files_stay_public(client, admin_token):
    assert get(client, "/ca.pem").status_code == 200
    assert get(client, "/ca.mobileconfig").status_code == 200
    with get(client, "/static/dashboard.css") as static:  # closes the file it streams
        assert static.status_code == 200


def test_a_browser_without_the_token_gets_a_form_then_a_cookie(client, admin_token):
    page = get(client, "/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and b'name="token"' in page.data
    assert b"not the lab's" in get(client, "/?token=nope", headers={"Accept": "text/html"}).data
    response = get(client, f"/?token={admin_token}", headers={"Accept": "text/html"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={admin_token}") and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # the cookie opens the page, the fragments and the API (an EventSource cannot send a header)
    assert get(client, "/").status_code == 200
    assert get(client, "/fragments/faults").status_code == 200
    assert get(client, "/api/events?last=1").status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://localhost.evil.example:443",
                                    "http://localhost", "https://localhost:1", "http://localhost:443"])
def test_changes_from_another_origin_are_refused(client, lab, origin):
    response = client.post("/api/faults", base_url=BASE, json={"name": "well-known-404"},
                           headers={"Origin": origin})
    assert response.status_code == 403 and response.get_json()["error"] == "cross-origin"
    assert lab.faults.armed() == []
    assert client.post("/api/reset", base_url=BASE, headers={"Origin": origin}).status_code == 403
    # reading is harmless: a foreign page cannot read the answer without CORS anyway
    assert get(client, "/api/faults", headers={"Origin": origin}).status_code == 200


def csrf_of(client, base=BASE) -> str:
    """The CSRF token the dashboard's page was served with (its meta tag and its cookie agree)."""
    page = client.get("/", base_url=base)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.get_data(as_text=True)).group(1)
    cookie = page.headers.getlist("Set-Cookie")
    assert any(c.startswith(f"{CSRF_COOKIE}={token};") and "SameSite=Strict" in c for c in cookie)
    return token


def test_changes_from_the_dashboard_itself_are_allowed(client, lab):
    own = f"https://localhost:{lab.https_port}"
    token = csrf_of(client, own)
    response = client.post("/api/faults", base_url=own, json={"name": "well-known-404"},
                           headers={"Origin": own, CSRF_HEADER: token})
    assert response.status_code == 201
    assert client.delete("/api/faults", base_url=BASE).get_json()["cleared"] == 1


def test_a_page_of_this_origin_still_needs_the_csrf_token(client, lab):
    own = f"https://localhost:{lab.https_port}"
    token = csrf_of(client, own)
    for headers in ({"Origin": own}, {"Origin": own, CSRF_HEADER: "forged"}, {"Sec-Fetch-Site": "same-origin"}):
        response = client.post("/api/faults", base_url=own, json={"name": "well-known-404"}, headers=headers)
        assert response.status_code == 403 and response.get_json()["error"] == "csrf-token-required"
    assert client.post("/api/faults", base_url=own, json={"name": "x"},
                       headers={"Sec-Fetch-Site": "cross-site", CSRF_HEADER: token}).status_code == 403
    assert lab.faults.armed() == []


def test_admin_pages_cannot_be_framed_or_cached(client):
    page = get(client, "/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert get(client, "/api/health").headers["Cache-Control"] == "no-store"


# -- reset -----------------------------------------------------------------------------------------------------------
def test_reset_rebuilds_the_scenario(lab, device):
    assert enroll(lab, device).outcome == "enrolled"
    lab.faults.set("well-known-500")
    client = lab.dispatcher.apps["localhost"][1].test_client()
    assert client.post("/api/dns/records", base_url=BASE,
                       json={"name": "extra.betterbag.test", "value": "x"}).status_code == 201
    old_abm_record = next(r for r in lab.zone.listing() if r["value"].startswith("apple-domain-verification"))
    assert lab.mdm.snapshot()["enrollments"]

    response = client.post("/api/reset", base_url=BASE)
    assert response.status_code == 200 and response.get_json()["reset"] is True

    assert lab.faults.armed() == []
    assert lab.mdm.snapshot()["enrollments"] == []
    records = lab.zone.listing()
    assert not any(r["name"] == "extra.betterbag.test" for r in records)
    new_abm_record = next(r for r in records if r["value"].startswith("apple-domain-verification"))
    assert new_abm_record != old_abm_record  # ABM was rebuilt with new secrets, and its TXT record with it
    abm = lab.abm.snapshot()
    assert abm["domains"][0]["verified"] and abm["servers"][0]["mdm_service_discovery_url"]
    assert lab.events.query(after=lab.events.last_id() - 1)[0]["summary"] == "lab reset to scenario betterbag"
    # the rebuilt lab works
    assert enroll(lab, device).outcome == "enrolled"


def test_a_reset_that_fails_says_why(lab, monkeypatch, client):
    def broken():
        raise RuntimeError("the scenario's ABM refused")
    monkeypatch.setattr(lab, "reset", broken)
    response = client.post("/api/reset", base_url=BASE)
    assert response.status_code == 500
    assert response.get_json() == {"error": "reset-failed", "message": "reset failed: the scenario's ABM refused"}


# -- enrollments -------------------------------------------------------------------------------------------------
def test_enrollments_show_the_device_story(lab, device, client):
    enroll(lab, device)
    [attempt] = get(client, "/api/enrollments?limit=1").get_json()
    assert attempt["identifier"] == IDENTIFIER and attempt["status"] == "enrolled"
    assert attempt["lanes"] == ["device", "dns", "org-domain", "mdm", "apple-id"]  # the sign-in at Apple last
    assert attempt["steps"][-1]["kind"] == "device-outcome"
    assert get(client, "/api/enrollments?limit=0").status_code == 400


# -- the CA -------------------------------------------------------------------------------------------------------
def test_ca_profile_holds_the_lab_ca(client, lab):
    response = get(client, "/ca.mobileconfig")
    assert response.headers["Content-Type"] == "application/x-apple-aspen-config"
    assert "mdmlab-ca.mobileconfig" in response.headers["Content-Disposition"]
    profile = plistlib.loads(response.data)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    assert "mdmlab" in profile["PayloadDisplayName"] and "betterbag.test" in profile["PayloadDisplayName"]
    assert "lab.test" in profile["PayloadDisplayName"]
    assert "Certificate Trust Settings" in profile["PayloadDescription"]
    [payload] = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    cert = x509.load_der_x509_certificate(payload["PayloadContent"])
    assert cert == x509.load_pem_x509_certificate(lab.pki.cert_path.read_bytes())
    uuid.UUID(profile["PayloadUUID"]) and uuid.UUID(payload["PayloadUUID"])
    assert profile["PayloadUUID"] != payload["PayloadUUID"]
    assert get(client, "/ca.mobileconfig").data == response.data  # the same profile every time
    pem = get(client, "/ca.pem")
    assert pem.headers["Content-Type"] == "application/x-pem-file"
    assert pem.data == cert.public_bytes(serialization.Encoding.PEM)


# -- the dashboard ---------------------------------------------------------------------------------------------------
def test_the_page_renders_every_section_with_a_strict_policy(client):
    page = get(client, "/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    for section in ("timeline", "faults", "abm", "mdm", "devices", "dns", "events"):
        assert f'data-section="{section}"' in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline: the policy allows none
    with get(client, "/static/dashboard.js") as script:  # closes the file it streams
        assert script.status_code == 200


@pytest.mark.parametrize("section", ["timeline", "faults", "abm", "mdm", "devices", "dns", "events"])
def test_each_section_is_a_fragment(client, section):
    response = get(client, f"/fragments/{section}")
    assert response.status_code == 200 and response.text.lstrip().startswith(f'<section id="{section}"')


def test_unknown_fragments_are_404(client):
    assert get(client, "/fragments/nothing").status_code == 404
    assert get(client, "/fragments/event/0").status_code == 404


def test_the_dashboard_escapes_what_clients_sent(lab, client):
    hostile = "<script>alert(1)</script>@betterbag.test"
    other = Client(lab.dispatcher)  # through the dispatcher, which records the exchange
    other.get("/.well-known/com.apple.remotemanagement", base_url="https://betterbag.test",
              query_string={"user-identifier": hostile, "model-family": "iPhone"})
    shown = 0
    for path in ("/", "/fragments/timeline", "/fragments/events"):
        text = get(client, path).text
        assert "<script>alert(1)" not in text, path
        shown += "&lt;script&gt;alert(1)&lt;/script&gt;@betterbag.test" in text
    assert shown == 3  # the identifier is on every one of them, escaped


def test_a_steps_detail_shows_the_redacted_exchange_and_the_device_verdict(lab, device, client):
    enroll(lab, device)
    [attempt] = get(client, "/api/enrollments?limit=1").get_json()
    sign_in = next(s for s in attempt["steps"] if s["label"] == "POST mdm.lab.test/auth/web")
    detail = get(client, f"/fragments/event/{sign_in['event']}?device={sign_in['device_event']}").text
    assert "Request" in detail and "Response" in detail and "The device:" in detail
    assert PASSWORD not in detail and "[redacted]" in detail


# -- the event stream (the generator; the listener's side is in tests/e2e) ----------------------------------------
def stream(client, app, path, lifetime=0.3, heartbeat=0.1, **kwargs) -> str:
    app.config.update(SSE_LIFETIME=lifetime, SSE_HEARTBEAT=heartbeat)
    try:
        started = time.monotonic()
        response = get(client, path, **kwargs)
        assert response.mimetype == "text/event-stream"
        text = response.get_data(as_text=True)
        assert time.monotonic() - started < lifetime + 5
        return text
    finally:
        app.config.pop("SSE_LIFETIME")
        app.config.pop("SSE_HEARTBEAT")


def messages(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_stream_sends_events_after_the_cursor_then_ends(client, app, lab):
    top = lab.events.last_id()
    text = stream(client, app, f"/api/events/stream?after={top - 3}")
    assert text.startswith("retry: 2000\n")
    assert [e["id"] for e in messages(text)][:3] == [top - 2, top - 1, top]
    assert f"id: {top}\n" in text
    assert ": keep-alive" in text and text.rstrip().endswith("reconnect with Last-Event-ID")


def test_stream_prefers_last_event_id_and_filters(client, app, lab):
    top = lab.events.last_id()
    since = max(top - 30, 0)
    text = stream(client, app, "/api/events/stream?after=0&component=dns", headers={"Last-Event-ID": str(since)})
    found = messages(text)
    assert found and all(e["component"] == "dns" and e["id"] > since for e in found)


def test_stream_ends_on_the_lab_stopped_fact_not_on_its_words(client, app, lab):
    from lab.events import Event
    top = lab.events.last_id()
    lab.events.record(Event(component="lab", kind="lab", summary="lab stopped"))  # only words: the stream goes on
    lab.events.record(Event(component="lab", kind="lab", summary="bye", outcome="lab-stopped"))
    text = stream(client, app, f"/api/events/stream?after={top}")
    assert [e["summary"] for e in messages(text)] == ["lab stopped", "bye"]
    assert ": keep-alive" not in text  # it ended at the fact, without waiting out its lifetime


def test_stream_without_a_cursor_starts_now(client, app, lab):
    assert messages(stream(client, app, "/api/events/stream?component=dns")) == []


@pytest.mark.parametrize("header", ["x", "-1", "1.5", "\uff11"])
def test_stream_refuses_a_bad_last_event_id(client, header):
    response = get(client, "/api/events/stream", headers={"Last-Event-ID": header})
    assert response.status_code == 400


def test_devices_render_whatever_the_lab_reports(lab, client, monkeypatch):
    """Devices and their data separation come from lab.snapshot(); the page shows what is there, generically."""
    real = lab.snapshot

    def with_devices():
        return {**real(), "devices": [{"device_id": "LAB0001", "model_family": "iPhone", "os_version": "26.1",
                                       "separation": {"managed": ["keychain", "notes"], "personal": ["photos"]},
                                       "updated": 1795599000.0}]}
    monkeypatch.setattr(lab, "snapshot", with_devices)
    text = get(client, "/fragments/devices").text
    assert "LAB0001" in text and "keychain, notes" in text and "photos" in text
    assert get(client, "/api/state/devices").get_json()["devices"][0]["device_id"] == "LAB0001"
    monkeypatch.setattr(lab, "snapshot", real)
    assert "No device has reported" in get(client, "/fragments/devices").text


def test_times_are_local_and_readable_whatever_their_form():
    import datetime as dt

    from lab.console.dashboard import _is_time_key, when
    moment = dt.datetime(2026, 11, 30, 0, 52, 45, tzinfo=dt.UTC)
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert when(moment.timestamp()) == local and when("2026-11-30T00:52:45Z") == local
    assert when("not a time") == "not a time"
    assert all(_is_time_key(k) for k in ("last_checked", "token_expiry", "last_updated_timestamp", "enrolled_at"))
    assert not _is_time_key("last_check")


def test_in_an_exercise_health_names_no_scenario(client, lab, monkeypatch):
    monkeypatch.setattr(lab, "conceal_faults", True, raising=False)
    health = get(client, "/api/health").get_json()
    assert health["scenario"] == "exercise" and "betterbag" not in json.dumps({"s": health["scenario"]})
    assert "<title>mdmlab · exercise</title>" in get(client, "/").text
