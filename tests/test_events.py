"""lab.events: the timeline in SQLite. Secrets never reach it in full; queries filter; follow() blocks, bounded."""
from __future__ import annotations

import collections
import json
import plistlib
import threading
import time

import pytest
from werkzeug.test import Client

from lab.dispatch import Dispatcher
from lab.events import Event, EventLog, device_trace_events, mask, redact_body, redact_headers, redact_query, redact_url

SECRET = "s3cr3t-Token-0123456789abcdef"  # long enough that mask() keeps a prefix
SHORT = "pw123"


@pytest.fixture
def events(tmp_path):
    log = EventLog(tmp_path / "events.db")
    yield log
    log.close()


def stored_bytes(tmp_path) -> bytes:
    """Everything SQLite wrote: the database and its write-ahead log."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("events.db*")))


# -- the redaction helpers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [SECRET, SHORT, "x" * 12, "x" * 11])
def test_mask_never_returns_the_value(value):
    masked = mask(value)
    assert value not in masked
    assert "[redacted]" in masked


def test_mask_keeps_a_short_prefix_of_long_values():
    assert mask(SECRET) == SECRET[:4] + "…[redacted]"
    assert mask(SHORT) == "[redacted]"


@pytest.mark.parametrize("key", ["access-token", "Access-Token", "access_token", "refresh_token", "code",
                                 "password", "token", "client_secret", "id_token"])
def test_query_secrets_are_masked(key):
    out = redact_query(f"user-identifier=eliza@betterbag.test&{key}={SECRET}&model-family=iPhone")
    assert SECRET not in out
    assert "user-identifier=eliza@betterbag.test" in out and "model-family=iPhone" in out


def test_location_with_access_token_is_masked():
    location = f"apple-remotemanagement-user-login://authentication-results?access-token={SECRET}"
    out = redact_url(location)
    assert SECRET not in out
    assert out.startswith("apple-remotemanagement-user-login://authentication-results?access-token=")


@pytest.mark.parametrize("name, value", [
    ("Authorization", f"Bearer {SECRET}"), ("authorization", f"Basic {SECRET}"), ("Authorization", SECRET),
    ("Cookie", f"session={SECRET}"), ("Set-Cookie", f"session={SECRET}; HttpOnly"),
    ("X-ADM-Auth-Session", SECRET), ("Mdm-Signature", SECRET),
    ("Location", f"https://mdm.lab.test/cb?code={SECRET}&state=1"),
])
def test_secret_headers_are_masked(name, value):
    out = redact_headers([(name, value), ("User-Agent", "MDM/1.0")])
    assert SECRET not in json.dumps(out, ensure_ascii=False)
    assert out["User-Agent"] == "MDM/1.0"


def test_authorization_keeps_its_scheme():
    assert redact_headers([("Authorization", f"Bearer {SECRET}")])["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize("body, content_type", [
    (json.dumps({"token_type": "Bearer", "access_token": SECRET, "refresh_token": SECRET + "r",
                 "expires_in": 3600}), "application/json"),
    (json.dumps({"data": [{"nested": {"refresh_token": SECRET}}]}), "application/json; charset=utf-8"),
    (json.dumps({"auth_session_token": SECRET}), "application/problem+json"),
    (f"user-identifier=eliza%40betterbag.test&password={SECRET}", "application/x-www-form-urlencoded"),
    (f"grant_type=refresh_token&refresh_token={SECRET}&client_id=x",
     "application/x-www-form-urlencoded;charset=UTF-8"),
    (f"<plist><dict><key>Password</key><string>{SECRET}</string></dict></plist>", "application/xml"),
    (f"<plist><dict><key>UnlockToken</key>\n<data>{SECRET}</data></dict></plist>", "application/x-apple-aspen-mdm"),
])
def test_secret_bodies_are_masked(body, content_type):
    out = redact_body(body.encode(), content_type)
    assert SECRET not in out
    assert "redacted" in out


def test_plain_fields_survive_redaction():
    out = json.loads(redact_body(json.dumps({"token_type": "Bearer", "access_token": SECRET}).encode(),
                                 "application/json"))
    assert out["token_type"] == "Bearer"
    form = redact_body(f"user-identifier=eliza%40betterbag.test&password={SECRET}".encode(),
                       "application/x-www-form-urlencoded")
    assert "user-identifier=eliza@betterbag.test" in form


def test_binary_bodies_are_described_not_stored():
    assert redact_body(b"\x30\x82\xff\xfe" + SECRET.encode(), "application/pkcs7-signature") == \
        f"<{4 + len(SECRET)} bytes application/pkcs7-signature>"
    assert redact_body(b"", "application/json") == ""


# -- secrets through the dispatcher into the stored event ------------------------------------------------------

def secret_app(environ, start_response):
    """Answers with every kind of secret the lab handles: a token callback, a token JSON body, a cookie."""
    body = json.dumps({"token_type": "Bearer", "access_token": SECRET, "refresh_token": SECRET[::-1]}).encode()
    start_response("308 Permanent Redirect", [
        ("Content-Type", "application/json"),
        ("Location", f"apple-remotemanagement-user-login://authentication-results?access-token={SECRET}"),
        ("Set-Cookie", f"sid={SECRET}"),
    ])
    return [body]


@pytest.mark.parametrize("request_kwargs", [
    {"method": "GET", "query_string": f"user-identifier=eliza@betterbag.test&access-token={SECRET}"},
    {"method": "PUT", "headers": {"Authorization": f"Bearer {SECRET}"}, "data": b"<plist/>"},
    {"method": "POST", "data": {"user-identifier": "eliza@betterbag.test", "password": SECRET}},
    {"method": "POST", "json": {"code": SECRET, "grant_type": "authorization_code"}},
], ids=["query", "authorization", "form-password", "json"])
def test_no_secret_reaches_the_stored_event(tmp_path, request_kwargs):
    log = EventLog(tmp_path / "events.db")
    try:
        dispatcher = Dispatcher(log)
        dispatcher.mount("mdm.lab.test", "mdm", secret_app)
        response = Client(dispatcher).open("/auth/web", base_url="https://mdm.lab.test", **request_kwargs)
        assert response.status_code == 308
        assert SECRET in response.headers["Location"]  # the client got it; the timeline must not
        [event] = log.query(kind="http")
        stored = json.dumps(event, ensure_ascii=False)
        assert SECRET not in stored and SECRET[::-1] not in stored
        assert event["host"] == "mdm.lab.test" and event["status"] == 308
        assert "redacted" in event["detail"]["response_headers"]["Location"]
    finally:
        log.close()
    raw = stored_bytes(tmp_path)
    for encoding in ("utf-8", "utf-16-le"):
        assert SECRET.encode(encoding) not in raw


# -- storage and queries -----------------------------------------------------------------------------------------

def test_record_returns_increasing_ids_and_round_trips(events):
    first = events.record(Event(component="mdm", host="mdm.lab.test", method="PUT", path="/mdm/checkin",
                                status=200, stage="check-in", device="E1", summary="Authenticate",
                                detail={"n": 1, "nested": {"ok": True}}))
    second = events.record(Event(component="dns", kind="dns", host="mdm.lab.test"))
    assert second > first
    assert events.last_id() == second
    row = events.query()[0]
    assert {k: row[k] for k in ("id", "component", "kind", "host", "method", "path", "status", "stage", "device",
                                "summary")} == {
        "id": first, "component": "mdm", "kind": "http", "host": "mdm.lab.test", "method": "PUT",
        "path": "/mdm/checkin", "status": 200, "stage": "check-in", "device": "E1", "summary": "Authenticate"}
    assert row["detail"] == {"n": 1, "nested": {"ok": True}}


@pytest.fixture
def populated(events):
    rows = [("dns", "dns", "mdm.lab.test", None), ("mdm", "http", "mdm.lab.test", "E1"),
            ("org-domain", "http", "betterbag.test", "eliza@betterbag.test"), ("mdm", "http", "mdm.lab.test", "E2"),
            ("lab", "lab", None, None)]
    ids = [events.record(Event(component=c, kind=k, host=h, device=d)) for c, k, h, d in rows]
    return events, ids


@pytest.mark.parametrize("filters, expected", [
    ({}, [0, 1, 2, 3, 4]),
    ({"host": "mdm.lab.test"}, [0, 1, 3]),
    ({"device": "E1"}, [1]),
    ({"component": "mdm"}, [1, 3]),
    ({"kind": "http"}, [1, 2, 3]),
    ({"component": "mdm", "device": "E2"}, [3]),
    ({"host": "nowhere.test"}, []),
    ({"limit": 2}, [0, 1]),
    ({"limit": 0}, [0]),  # clamped to at least one
])
def test_query_filters(populated, filters, expected):
    events, ids = populated
    assert [e["id"] for e in events.query(**filters)] == [ids[i] for i in expected]


def test_query_after_pages_forward(populated):
    events, ids = populated
    assert [e["id"] for e in events.query(after=ids[2])] == ids[3:]
    assert [e["id"] for e in events.query(after=ids[1], kind="http", limit=1)] == [ids[2]]
    assert events.query(after=ids[-1]) == []


def test_last_id_of_an_empty_log(events):
    assert events.last_id() == 0
    assert events.query() == []


def test_events_survive_reopening(tmp_path):
    log = EventLog(tmp_path / "events.db")
    event_id = log.record(Event(component="lab", kind="lab", summary="lab up"))
    log.close()
    again = EventLog(tmp_path / "events.db")
    try:
        assert [(e["id"], e["summary"]) for e in again.query()] == [(event_id, "lab up")]
    finally:
        again.close()


# -- follow's wait ------------------------------------------------------------------------------------------------

def test_follow_returns_at_once_when_a_newer_event_exists(events):
    with events.following():
        events.record(Event(component="lab"))
        started = time.monotonic()
        assert events.follow(0, timeout=5)
        assert time.monotonic() - started < 1


def test_follow_times_out_without_new_events(events):
    last = events.record(Event(component="lab"))
    with events.following():
        started = time.monotonic()
        assert events.follow(last, timeout=0.2) == []
        assert 0.15 <= time.monotonic() - started < 2


def test_follow_wakes_when_another_thread_records(events):
    last = events.record(Event(component="lab"))
    timer = threading.Timer(0.1, lambda: events.record(Event(component="mdm", summary="late")))
    with events.following():
        timer.start()
        try:
            started = time.monotonic()
            assert [event["summary"] for event, _ in events.follow(last, timeout=5)] == ["late"]
            assert time.monotonic() - started < 4
        finally:
            timer.join(timeout=5)


# -- follow: the live feed the event streams share -----------------------------------------------------------

def test_a_follower_gets_the_committed_events_as_query_shows_them_with_their_json(events):
    with events.following():
        for n in range(3):
            events.record(Event(component="mdm", summary=f"e{n}", detail={"n": n}, status=200))
        got = []
        while len(got) < 3:
            batch = events.follow(got[-1][0]["id"] if got else 0, timeout=5)
            assert batch, "the writer commits within moments"
            got += batch
    assert [event for event, _ in got] == events.query()
    assert [json.loads(data) for _, data in got] == events.query()


def test_followers_in_the_window_share_the_feed_and_never_query(events, monkeypatch):
    with events.following():
        first = events.record(Event(component="lab", summary="before"))
        assert events.follow(0, timeout=5)  # committed into the feed
        monkeypatch.setattr(events, "query", lambda **kw: pytest.fail("a follower in the window read the database"))
        events.record(Event(component="lab", summary="after"))
        for _ in range(5):  # five streams, one feed
            batch = events.follow(first, timeout=5)
            assert [event["summary"] for event, _ in batch] == ["after"]


def test_a_follower_behind_the_window_reads_the_database(tmp_path):
    log = EventLog(tmp_path / "events.db")
    log._feed = collections.deque(maxlen=2)
    try:
        with log.following():
            ids = [log.record(Event(component="lab", summary=str(n))) for n in range(5)]
            log.flush()
            assert [event["id"] for event, _ in log.follow(0, timeout=5)] == ids
            assert [event["id"] for event, _ in log.follow(ids[-2], timeout=5)] == ids[-1:]
    finally:
        log.close()


def test_follow_times_out_empty_and_says_when_the_log_closed(tmp_path):
    log = EventLog(tmp_path / "events.db")
    last = log.record(Event(component="lab"))
    with log.following():
        log.flush()
        assert log.follow(last, timeout=0.1) == []
        threading.Timer(0.1, log.close).start()
        assert log.follow(last, timeout=10) is None


def test_the_writer_gathers_events_but_a_reader_never_waits_for_the_gathering(tmp_path, monkeypatch):
    """Events recorded close together share one commit; a reader (flush, query, an SSE stream) hurries the writer
    instead of waiting out the window, here made far longer than the flush timeout to prove it."""
    monkeypatch.setattr("lab.events.COALESCE_SECONDS", 120.0)
    log = EventLog(tmp_path / "events.db")
    try:
        commits = []
        original = log.store.transaction

        def counting():
            commits.append(1)
            return original()

        monkeypatch.setattr(log.store, "transaction", counting)
        ids = [log.record(Event(component="test", summary=f"event {i}")) for i in range(25)]
        log.flush(timeout=10)  # would time out if it waited for the 120 s window
        assert [e["id"] for e in log.query(after=ids[0] - 1)] == ids
        assert len(commits) == 1
        later = log.record(Event(component="test", summary="after the first commit"))
        assert log.last_id() == later
    finally:
        log.close()


# -- what an event belongs to (contract 2: enrollment, user, message_type, outcome) ------------------------------

def test_the_belonging_fields_round_trip_and_filter(events):
    enrolled = events.record(Event(component="mdm", stage="check-in", device="E/1", enrollment="E/1",
                                   user="eliza@betterbag.test", message_type="TokenUpdate", outcome="enrolled"))
    events.record(Event(component="mdm", stage="check-in", enrollment="E/1", message_type="Authenticate"))
    events.record(Event(component="lab", kind="lab", outcome="lab-stopped"))
    [row] = events.query(outcome="enrolled")
    assert row["id"] == enrolled
    assert (row["enrollment"], row["user"], row["message_type"]) == ("E/1", "eliza@betterbag.test", "TokenUpdate")
    assert [e["message_type"] for e in events.query(enrollment="E/1")] == ["TokenUpdate", "Authenticate"]
    assert [e["kind"] for e in events.query(outcome="lab-stopped")] == ["lab"]
    with pytest.raises(TypeError):
        events.query(summary="lab stopped")  # text is no filter


def test_before_and_newest_page_backwards(populated):
    events, ids = populated
    assert [e["id"] for e in events.query(before=ids[3])] == ids[:3]
    assert [e["id"] for e in events.query(before=ids[4], newest=True, limit=2)] == ids[2:4]
    assert [e["id"] for e in events.query(newest=True, limit=2, kind="http")] == [ids[2], ids[3]]


OLD_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, component TEXT NOT NULL,
    kind TEXT NOT NULL, host TEXT, method TEXT, path TEXT, status INTEGER, stage TEXT, device TEXT, summary TEXT,
    detail TEXT NOT NULL DEFAULT '{}')
"""


def test_a_timeline_from_before_the_fields_is_migrated_and_its_facts_filled_in(tmp_path):
    import sqlite3
    db = sqlite3.connect(tmp_path / "events.db")
    db.execute(OLD_SCHEMA)
    rows = [("mdm", "http", 200, "check-in", "E1", "Authenticate E1 for eliza (user)", "{}"),
            ("mdm", "http", 200, "check-in", "E1", "TokenUpdate E1: enrolled", "{}"),
            ("mdm", "http", 401, "check-in", "E1", "401 bad-token: expired", "{}"),
            ("device", "device-outcome", None, "check-in", "eliza", "enrolled: fine", '{"outcome": "enrolled"}'),
            ("lab", "lab", None, None, None, "lab stopped", "{}")]
    db.executemany("INSERT INTO events (ts, component, kind, status, stage, device, summary, detail)"
                   " VALUES (1, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    log = EventLog(tmp_path / "events.db")
    try:
        found = log.query()
        assert [(e["message_type"], e["outcome"], e["enrollment"]) for e in found] == [
            ("Authenticate", None, None), ("TokenUpdate", "enrolled", "E1"), (None, None, None),
            (None, "enrolled", None), (None, "lab-stopped", None)]
        new = log.record(Event(component="mdm", outcome="enrolled", enrollment="E2"))
        assert [e["id"] for e in log.query(enrollment="E2")] == [new]
    finally:
        log.close()
    EventLog(tmp_path / "events.db").close()  # a second open finds nothing to migrate


def test_label_keywords_reach_the_event(events):
    from lab.flaskapp import create_app, label

    app = create_app(__name__, "mdm")

    @app.put("/mdm/checkin")
    def check_in():
        label(stage="check-in", device="E1", enrollment="E1", user="eliza@betterbag.test",
              message_type="TokenUpdate", outcome="enrolled")
        return ""

    dispatcher = Dispatcher(events)
    dispatcher.mount("mdm.lab.test", "mdm", app)
    Client(dispatcher).put("/mdm/checkin", headers={"Host": "mdm.lab.test"})
    [row] = events.query()
    assert {k: row[k] for k in ("enrollment", "user", "message_type", "outcome")} == {
        "enrollment": "E1", "user": "eliza@betterbag.test", "message_type": "TokenUpdate", "outcome": "enrolled"}


def test_the_outcome_is_said_once():
    trace = {"steps": [], "outcome": "enrolled", "explanation": "enrolled with account-driven User Enrollment"}
    [outcome] = device_trace_events("eliza@betterbag.test", trace)
    assert outcome.summary == "enrolled with account-driven User Enrollment" and outcome.outcome == "enrolled"
    [failed] = device_trace_events("eliza@betterbag.test", {**trace, "outcome": "failed", "explanation": "no MDM"})
    assert failed.summary == "failed: no MDM"


def test_a_signed_profile_is_stored_opened_readable_and_without_its_secrets():
    from lab import cms
    from lab.pki import self_signed

    p12 = b"\x30\x82PKCS12-" + SECRET.encode()
    profile = {"PayloadType": "Configuration", "PayloadContent": [
        {"PayloadType": "com.apple.security.pkcs12", "Password": SECRET, "PayloadContent": p12},
        {"PayloadType": "com.apple.mdm", "AccessRights": 8191, "Topic": "com.apple.mgmt.x"}]}
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed("Profile Signer", key)
    body = cms.sign(plistlib.dumps(profile), cert, key)
    shown = redact_body(body, "application/x-apple-aspen-config")
    assert shown.startswith("<!-- CMS SignedData (Common Name: Profile Signer)")
    assert "<key>AccessRights</key>" in shown and "<integer>8191</integer>" in shown
    assert f"[{len(p12)} bytes of data, redacted]" in shown
    assert SECRET not in shown and "PKCS12" not in shown
    aspen = "application/x-apple-aspen-config"
    assert redact_body(b"\x30\x82garbage", aspen) == f"<9 bytes {aspen}>"


# -- secrets outside the known fields (issue 13 §5, F20) ----------------------------------------------------------

@pytest.mark.parametrize("name", ["Proxy-Authorization", "X-Api-Key", "X-API-KEY", "X-Auth-Token", "Api-Key",
                                  "X-Amz-Security-Token", "X-Session-Id", "X-Client-Secret", "X-CSRF-Token"])
def test_every_header_named_like_a_credential_is_masked(name):
    out = redact_headers([(name, f"Bearer {SECRET}"), (name + "-2", SECRET)])
    assert SECRET not in json.dumps(out, ensure_ascii=False)


def test_bearer_strings_are_masked_wherever_they_are_written():
    out = redact_headers([("X-Forwarded-Note", f"sent with Bearer {SECRET}"), ("WWW-Authenticate",
                          'Bearer method="apple-as-web",url="https://mdm.lab.test/auth/web"')])
    assert SECRET not in out["X-Forwarded-Note"]
    assert out["WWW-Authenticate"] == 'Bearer method="apple-as-web",url="https://mdm.lab.test/auth/web"'
    assert SECRET not in redact_body(f"error: token Bearer {SECRET} expired".encode(), "text/plain")


@pytest.mark.parametrize("key", ["apiKey", "api_key", "sessionToken", "clientSecret", "userPassword", "passwd",
                                 "privateKey", "credentials", "X-Api-Key"])
def test_json_and_form_members_named_like_credentials_are_masked(key):
    assert SECRET not in redact_body(json.dumps({"outer": {key: SECRET}}).encode(), "application/json")
    assert SECRET not in redact_body(json.dumps({key: SECRET}).encode(), "text/plain")  # mislabelled JSON
    assert SECRET not in redact_body(f"a=1&{key}={SECRET}".encode(), "application/x-www-form-urlencoded")
    assert SECRET not in redact_query(f"{key}={SECRET}")


def test_names_about_a_credential_are_not_credentials():
    body = json.dumps({"token_type": "Bearer", "token_url": "https://x.test/t", "expires_in": 3600,
                       "token_ttl": 60, "login_hint": "eliza@betterbag.test", "method": "apple-as-web"})
    assert json.loads(redact_body(body.encode(), "application/json")) == json.loads(body)


# -- retention (issue 13 §7, F14) ---------------------------------------------------------------------------------

def test_the_timeline_keeps_its_newest_events_and_says_what_it_dropped(tmp_path):
    log = EventLog(tmp_path / "events.db", retain=100)
    try:
        for i in range(1, 351):
            log.record(Event(component="dns", kind="dns", summary=str(i)))
            if i % 50 == 0:
                log.flush()
        log.flush()
        kept = log.query(limit=5000)
        assert len(kept) <= 100 + 10 + 5  # the bound, its slack and the notices
        assert kept[-1]["summary"] == "350" or kept[-1]["kind"] == "retention"
        notices = log.query(kind="retention")
        assert notices and all(n["outcome"] == "events-dropped" for n in notices)
        assert "older ones" in notices[-1]["summary"]
        retention = log.retention()
        assert retention["retain"] == 100 and retention["dropped"] >= 230
        assert retention["through"] < kept[0]["id"]
    finally:
        log.close()
    reopened = EventLog(tmp_path / "events.db", retain=100)  # the count survives a restart
    try:
        assert reopened.retention()["dropped"] == retention["dropped"]
    finally:
        reopened.close()
