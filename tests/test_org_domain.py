"""mocks.org_domain through Flask's test client: the well-known resource of PROTOCOL.md 1.2-1.4."""
from __future__ import annotations

import pytest

from mocks.org_domain import DomainSetup, OrgDomainState, create_app

WELL_KNOWN = "/.well-known/com.apple.remotemanagement"
BASE_URL = "https://mdm.lab.test:8443/enroll"
IDENTIFIER = "eliza@betterbag.test"
FAMILIES = ["AppleTV", "iPad", "iPhone", "Mac", "RealityDevice", "Watch"]


@pytest.fixture
def client():
    state = OrgDomainState([DomainSetup("betterbag.test", "mdm-byod", BASE_URL),
                            DomainSetup("school.test", "mdm-adde", "https://mdm.lab.test/enroll/adde")])
    return create_app(state).test_client()


def get(client, query: str = f"user-identifier={IDENTIFIER}&model-family=iPhone", host: str = "betterbag.test",
        path: str = WELL_KNOWN):
    return client.get(f"{path}?{query}" if query is not None else path, base_url=f"https://{host}")


def assert_error(response, status: int, code: str):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize("family", FAMILIES)
def test_well_known_answers_the_exact_document(client, family):
    response = get(client, f"user-identifier={IDENTIFIER}&model-family={family}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"Servers": [{"Version": "mdm-byod", "BaseURL": BASE_URL}]}


def test_each_domain_answers_its_own_version(client):
    response = get(client, "user-identifier=ada@school.test&model-family=Mac", host="school.test")
    assert response.get_json() == {"Servers": [{"Version": "mdm-adde", "BaseURL": "https://mdm.lab.test/enroll/adde"}]}


@pytest.mark.parametrize("query", [
    f"user-identifier={IDENTIFIER}",  # model-family is optional
    "user-identifier=eliza%40betterbag.test&model-family=iPhone",  # @ percent-encoded
    f"model-family=iPhone&user-identifier={IDENTIFIER}",
])
def test_accepted_query_forms(client, query):
    assert get(client, query).status_code == 200


def test_host_header_port_is_ignored(client):
    response = client.get(f"{WELL_KNOWN}?user-identifier={IDENTIFIER}", base_url="https://betterbag.test:8443")
    assert response.status_code == 200


@pytest.mark.parametrize("query", [
    None, "", "model-family=iPhone", "user-identifier=&model-family=iPhone", "user-identifier=eliza",
    "user-identifier=a@b@betterbag.test", "user-identifier=@betterbag.test", "user-identifier=eliza@",
    "user-identifier=eliza@localhost", "user-identifier=eliza@.betterbag.test",
    "user-identifier=eliza@betterbag.test.",
])
def test_missing_or_malformed_identifier_is_400(client, query):
    assert_error(get(client, query), 400, "malformed-identifier")


@pytest.mark.parametrize("family", ["iphone", "Vision", "", "IPHONE", "iPhone17,2"])
def test_unknown_model_family_is_400(client, family):
    body = assert_error(get(client, f"user-identifier={IDENTIFIER}&model-family={family}"), 400,
                        "unknown-model-family")
    assert "iPhone" in body["message"]  # names the accepted values


@pytest.mark.parametrize("path", ["/", "/.well-known/com.apple.remotemanagement.", "/.well-known/other",
                                  "/.well-known/com.apple.remotemanagement/extra"])
def test_unknown_path_is_a_json_404(client, path):
    response = get(client, path=path)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] in ("not-found", "no-such-path")
    assert path in body["message"]


def test_host_that_is_not_an_org_domain_is_404(client):
    assert_error(get(client, host="elsewhere.test"), 404, "unknown-domain")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_405(client, method):
    response = client.open(f"{WELL_KNOWN}?user-identifier={IDENTIFIER}", method=method,
                           base_url="https://betterbag.test")
    assert_error(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]



def test_routing_per_device_type_sends_a_family_to_its_own_mdm():
    setup = DomainSetup("betterbag.test", "mdm-byod", "https://mdm.lab.test:8443/enroll", {"Mac": "mdm-adde"},
                        adde_base_url="https://mdm.lab.test:8443/enroll/adde",
                        mdm_origins={"Mac": "https://mdm-mac.lab.test:8443"})
    mac = setup.document("eliza@betterbag.test", "Mac")["Servers"][0]
    assert mac == {"Version": "mdm-adde", "BaseURL": "https://mdm-mac.lab.test:8443/enroll/adde"}
    assert setup.document("eliza@betterbag.test", "iPhone")["Servers"][0] == {
        "Version": "mdm-byod", "BaseURL": "https://mdm.lab.test:8443/enroll"}
