"""Two field faults of the web sign-in through the lab's real DNS and TLS, with a federated OAuth 2 MDM: the sign-in's
state lost across its round trip (dropped by the IdP, or by the MDM's own last redirect), and a sign-in cookie set
for another host (the browser refuses it, as curl's cookie engine does, and the sign-in loops)."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest

from lab.launcher import Lab
from lab.scenario import load
from mocks.mdm.signin import REDIRECT_URL, SIGN_IN_COOKIE
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("auth-oauth2-federated"), tmp_path_factory.mktemp("signin"), https_port=0, dns_port=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _clear(lab):
    yield
    lab.faults.clear()


def test_a_cookie_for_another_host_makes_the_sign_in_loop(lab, device):
    lab.faults.set("session-cookie-other-host")
    after = lab.events.last_id()
    trace = device().enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "sign-in-too-many-redirects"), trace.render()
    assert f"refused {SIGN_IN_COOKIE} from mdm.lab.test with Domain=idp.betterbag.test" in trace.explanation
    assert any(s.code == "cookie-refused" for s in trace.steps)
    summaries = [e["summary"] for e in lab.events.query(after=after, limit=5000) if e["host"] == "mdm.lab.test"]
    assert any("starting over" in s for s in summaries)  # the MDM's side of the loop, in the timeline
    lab.faults.clear()
    assert device().enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"  # the clear repairs it


def test_state_dropped_by_the_idp_leaves_the_mdm_unable_to_match(lab, device):
    lab.faults.set("idp-drops-state", times=1)
    trace = device().enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "sign-in-page-http-400"), trace.render()
    assert "federated-state-missing" in trace.explanation and "return state unchanged" in trace.explanation


def test_state_dropped_by_the_mdms_last_redirect_is_refused_by_the_device(lab, device):
    lab.faults.set("callback-drops-state", times=1)
    trace = device().enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "oauth2-state-mismatch"), trace.render()


@pytest.mark.parametrize("armed", [False, True])
def test_curls_cookie_engine_refuses_the_cookie_too(lab, tmp_path, armed):
    curl = require_tool("curl")
    if armed:
        lab.faults.set("session-cookie-other-host", times=1)
    query = urlencode({"response_type": "code", "client_id": lab.scenario.mdm.client_id, "scope": "mdm",
                       "redirect_uri": REDIRECT_URL, "state": "S", "login_hint": IDENTIFIER})
    jar = tmp_path / "cookies.txt"
    result = run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-c", str(jar), "--connect-to",
                  f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path),
                  f"https://{lab.scenario.mdm.host}:{lab.https_port}/oauth2/authorize?{query}"])
    assert result.stdout.decode() == "302"
    stored = jar.read_text() if jar.exists() else ""
    assert (SIGN_IN_COOKIE in stored) is not armed
