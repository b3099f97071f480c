"""The console against hostile and careless clients, through the real listener (TLS on loopback, curl as the
client): the admin gate's exact-origin and CSRF checks (issue 13 §5, F7)."""
from __future__ import annotations

import json
import re

import pytest

from lab.admin_gate import CSRF_COOKIE, CSRF_HEADER
from tests.conftest import require_tool, run


def curl(lab, method, path, *args, host="localhost") -> tuple[int, str, str]:
    """(status, headers, body) of one request through the lab's TLS listener."""
    result = run([require_tool("curl"), "-s", "-i", "--cacert", str(lab.pki.cert_path), "-X", method,
                  "--resolve", f"{host}:{lab.https_port}:127.0.0.1", *args,
                  f"https://{host}:{lab.https_port}{path}"])
    head, _, body = result.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
    while head.startswith("HTTP/1.1 100"):
        head, _, body = body.partition("\r\n\r\n")
    return int(head.split()[1]), head, body


@pytest.mark.parametrize("origin", ["http://localhost:1", "https://evil.example", "http://localhost",
                                    "https://localhost", "https://localhost:1", "null"])
def test_a_foreign_origin_cannot_change_the_lab(lab, origin):
    """F7: scheme and port count, not only the host (``https://localhost`` is port 443, not the lab's)."""
    status, _, body = curl(lab, "POST", "/api/faults", "-H", f"Origin: {origin}", "-H",
                           "Content-Type: application/json", "-d", '{"name": "well-known-404"}')
    assert status == 403 and json.loads(body)["error"] == "cross-origin"
    assert curl(lab, "POST", "/api/reset", "-H", f"Origin: {origin}")[0] == 403
    assert lab.faults.armed() == []


def test_the_dashboards_own_page_changes_the_lab_with_its_csrf_token(lab):
    own = f"https://localhost:{lab.https_port}"
    status, head, page = curl(lab, "GET", "/")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    assert re.search(rf"(?im)^set-cookie: {CSRF_COOKIE}={re.escape(token)};.*samesite=strict", head)
    assert "frame-ancestors 'none'" in head
    arm = ["-H", f"Origin: {own}", "-H", "Content-Type: application/json", "-d", '{"name": "well-known-404"}']
    status, _, body = curl(lab, "POST", "/api/faults", *arm)
    assert status == 403 and json.loads(body)["error"] == "csrf-token-required"
    assert curl(lab, "POST", "/api/faults", *arm, "-H", f"{CSRF_HEADER}: {token}",
                "-b", f"{CSRF_COOKIE}=another-{token}")[0] == 403
    status, _, body = curl(lab, "POST", "/api/faults", *arm, "-H", f"{CSRF_HEADER}: {token}",
                           "-b", f"{CSRF_COOKIE}={token}")
    assert status == 201, body
    assert curl(lab, "DELETE", "/api/faults")[0] == 200  # the CLI sends no browser headers: loopback trusts it
    assert lab.faults.armed() == []


def test_the_mocks_pages_cannot_be_framed_either(lab):
    status, head, _ = curl(lab, "GET", "/auth/web?user-identifier=eliza%40betterbag.test", host=lab.scenario.mdm.host)
    assert status == 200 and re.search(r"(?im)^content-security-policy: frame-ancestors 'none'", head)
    assert re.search(r"(?im)^x-frame-options: DENY", head)


# -- the control API's JSON (F17) -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body", ["[" * 100000 + "]" * 100000, '{"a":' * 5000 + "1" + "}" * 5000,
                                  '{"name": NaN}', '{"name": "well-known-404", "host": "\\u0001\\u0002"}',
                                  '{"name": "\\ud800"}', '{"name": 1e999999}', "\xff\xfe",
                                  '{"name": "well-known-404", "times": ' + "9" * 5000 + "}"])
def test_bad_json_is_a_400_with_the_reason_never_a_500(lab, body, tmp_path):
    payload = tmp_path / "body.json"
    payload.write_bytes(body.encode("utf-8", "surrogatepass") if body != "\xff\xfe" else b"\xff\xfe")
    status, _, answer = curl(lab, "POST", "/api/faults", "-H", "Content-Type: application/json",
                             "--data-binary", f"@{payload}")
    assert status == 400, answer
    assert json.loads(answer)["error"] in ("bad-json", "bad-json-value", "bad-fault-request", "bad-fault-host",
                                           "unknown-fault")
    assert curl(lab, "GET", "/api/health")[0] == 200  # and the lab keeps serving


def test_command_params_a_plist_cannot_carry_are_a_400(lab, device):
    from tests.conftest import IDENTIFIER, PASSWORD
    d = device()
    assert d.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    enrollment_id = d.enrollment.enrollment_id
    status, _, answer = curl(lab, "POST", f"/api/mdm/enrollments/{enrollment_id}/commands", "-H",
                             "Content-Type: application/json", "-d",
                             '{"request_type": "Settings", "params": {"a": "\\u0001\\u0002"}}')
    assert status == 400 and json.loads(answer)["error"] == "bad-command-request"


# -- secrets outside the known fields (F20) -------------------------------------------------------------------------

def test_credentials_in_any_header_or_member_never_reach_the_timeline(lab):
    token = "tok-" + "A1b2C3d4" * 4
    status, _, _ = curl(lab, "GET", "/.well-known/com.apple.remotemanagement?user-identifier=eliza@betterbag.test"
                        "&model-family=iPhone", "-H", f"Proxy-Authorization: Bearer {token}", "-H",
                        f"X-Api-Key: {token}", "-H", f"X-Note: Bearer {token}", host="betterbag.test")
    assert status == 200
    curl(lab, "POST", "/api/device-traces", "-H", "Content-Type: application/json", "-d",
         json.dumps({"identifier": "x@betterbag.test", "steps": [], "outcome": "failed",
                     "explanation": f"Bearer {token}", "apiKey": token, "sessionToken": token}))
    _, _, events = curl(lab, "GET", "/api/events?last=20")
    assert token not in events
    assert "Proxy-Authorization" in events and "X-Api-Key" in events  # the headers are shown, masked


# -- EnrollmentIDs with a slash (F23) -------------------------------------------------------------------------------

def test_an_enrollment_id_with_a_slash_is_reachable_through_the_api(lab):
    with lab.mdm.store.transaction() as db:  # as an Authenticate and TokenUpdate with EnrollmentID "a/b" leave it
        db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, push_token, push_magic, created,"
                   " updated) VALUES ('a/b', 'eliza@betterbag.test', 'user', 't', 'enrolled', x'00', 'm', 0, 0)")
    status, _, body = curl(lab, "GET", "/api/mdm/enrollments/a%2Fb/commands")
    assert status == 200 and json.loads(body) == [], body
    status, _, body = curl(lab, "POST", "/api/mdm/enrollments/a%2Fb/commands", "-H", "Content-Type: application/json",
                           "-d", '{"request_type": "DeviceInformation"}')
    assert status == 201, body
    assert [c["request_type"] for c in lab.mdm.commands.listing("a/b")] == ["DeviceInformation"]
    status, _, body = curl(lab, "GET", "/api/mdm/enrollments/a/b/commands")  # unencoded, through the path converter
    assert status == 200 and len(json.loads(body)) == 1


# -- a large timeline: bounded, paginated, trimmed (§2, §7) ---------------------------------------------------------

def test_the_api_pages_back_through_the_timeline(lab):
    _, _, newest = curl(lab, "GET", "/api/events?last=5")
    newest = json.loads(newest)
    assert len(newest) == 5 and [e["id"] for e in newest] == sorted(e["id"] for e in newest)
    _, _, page = curl(lab, "GET", f"/api/events?before={newest[0]['id']}&limit=3")
    page = json.loads(page)
    assert len(page) == 3 and page[-1]["id"] < newest[0]["id"]
    assert [e["id"] for e in page] == sorted(e["id"] for e in page)
    _, _, health = curl(lab, "GET", "/api/health")
    assert json.loads(health)["timeline"]["retain"] == lab.events.retain


def test_a_full_timeline_drops_its_oldest_events_and_says_so(lab):
    """Retention through the real listener: the bound is lowered for this test, every request is an event."""
    saved = lab.events.retain
    lab.events.retain = 40
    try:
        for _ in range(60):
            assert curl(lab, "GET", "/api/health")[0] == 200
        lab.events.flush()
        _, _, health = curl(lab, "GET", "/api/health")
        kept = json.loads(health)["timeline"]
        assert kept["retain"] == 40 and kept["dropped"] > 0
        _, _, notices = curl(lab, "GET", "/api/events?kind=retention&last=1")
        [notice] = json.loads(notices)
        assert notice["outcome"] == "events-dropped" and "older ones" in notice["summary"]
        assert notice["detail"]["through"] <= kept["through"]
        _, _, oldest = curl(lab, "GET", "/api/events?limit=1")
        assert json.loads(oldest)[0]["id"] > kept["through"]
    finally:
        lab.events.retain = saved
