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
