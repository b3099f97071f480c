"""Helpers for the MDM tests that use Flask's test client: an MDM of either method with a controllable clock and
a real fault board, and the requests a device makes."""
from __future__ import annotations

import plistlib
from urllib.parse import parse_qs, urlencode, urlsplit

from lab.faults import FaultBoard, catalogue
from lab.scenario import User
from mocks.mdm import FAULTS, MDMSetup, MDMState, create_app, urls

ORIGIN = "https://mdm.lab.test:8443"
URLS = urls(ORIGIN)
HOST = "mdm.lab.test"
TOPIC = "com.apple.mgmt.External.betterbag"
TTL = 3600
IDENTIFIER, PASSWORD = "eliza@betterbag.test", "carry-on-2026"
OTHER, OTHER_PASSWORD = "bob@betterbag.test", "bob-password-1"
USERS = (User(IDENTIFIER, PASSWORD, "Eliza Bagshaw"), User(OTHER, OTHER_PASSWORD, "Bob"))
REDIRECT = "apple-remotemanagement-user-login:/oauth2/redirection"
CLIENT_ID = "8C1D4B2E-6D0F-4E55-9E1A-MDMLAB000001"
PATH = {k: urlsplit(v).path for k, v in URLS.items()}
# The enrollment request (MachineInfo) of a User Enrollment (mdm-byod), and what a Device Enrollment (mdm-adde) adds
DEVICE_INFO = {"LANGUAGE": "en-US", "PRODUCT": "iPhone17,2", "VERSION": "23A300"}
ADDE_INFO = {"UDID": "00008120-001234567890801E", "SERIAL": "F2LXK0QZHG7F"}


def device_info(mode_path: str = "base_url", **overrides) -> dict:
    """The MachineInfo a device posts to ``mode_path`` (base_url: mdm-byod, adde_base_url: mdm-adde)."""
    return {**DEVICE_INFO, **(ADDE_INFO if mode_path == "adde_base_url" else {}), **overrides}


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def fault_board() -> FaultBoard:
    return FaultBoard(catalogue(FAULTS), {"mdm": {HOST}}, HOST)


def make_state(directory, signer, clock, *, faults=None, **setup) -> MDMState:
    values = {"organization": "BetterBag", "host": HOST, "topic": TOPIC, "token_ttl": TTL, "users": USERS,
              **URLS, **setup}
    return MDMState(MDMSetup(**values), directory, signer, clock=clock, faults=faults)


def client_of(state):
    return create_app(state).test_client()


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def authorize_query(state: str = "STATE-1", **extra) -> dict:
    return {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "scope": "mdm",
            "state": state, "login_hint": IDENTIFIER, **extra}


def request_id_of(html: str) -> str:
    marker = 'name="request" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def location_query(response) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def web_sign_in(client, identifier: str = IDENTIFIER, password: str = PASSWORD) -> str:
    """The apple-as-web sign-in form, posted: the access token its redirect carries."""
    response = client.post(PATH["auth_url"], data={"user-identifier": identifier, "password": password},
                           base_url=ORIGIN)
    return location_query(response)["access-token"]


def authorize(client, password: str = PASSWORD, identifier: str = IDENTIFIER, **extra):
    """GET the authorization page, then POST the form: the final response (308 with code and state)."""
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(**extra)), base_url=ORIGIN)
    assert page.status_code == 200, page.get_data(as_text=True)
    return client.post(PATH["authorize_url"], data={"request": request_id_of(page.get_data(as_text=True)),
                                                    "user-identifier": identifier, "password": password},
                       base_url=ORIGIN)


def token(client, **form):
    return client.post(PATH["token_url"], data={"client_id": CLIENT_ID, **form}, base_url=ORIGIN)


def code_for(client, **extra) -> str:
    response = authorize(client, **extra)
    assert response.status_code == 308, response.get_data(as_text=True)
    return location_query(response)["code"]


def tokens_for(client, **extra) -> dict:
    response = token(client, grant_type="authorization_code", code=code_for(client, **extra), redirect_uri=REDIRECT)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def enroll(client, access_token: str, mode_path: str = "base_url"):
    return client.post(PATH[mode_path], data=plistlib.dumps(device_info(mode_path)), headers=bearer(access_token),
                       base_url=ORIGIN)


def check_in(client, message: dict, access_token: str | None):
    return client.put(PATH["checkin_url"], data=plistlib.dumps(message), headers=bearer(access_token),
                      content_type="application/x-apple-aspen-mdm-checkin", base_url=ORIGIN)


def poll(client, report: dict, access_token: str | None):
    return client.put(PATH["server_url"], data=plistlib.dumps(report), headers=bearer(access_token),
                      content_type="application/x-apple-aspen-mdm", base_url=ORIGIN)


def enrolled(client, access_token: str, ids: dict, mode_path: str = "base_url") -> None:
    """Profile, Authenticate and TokenUpdate for ``ids`` (EnrollmentID, or UDID for ADDE)."""
    assert enroll(client, access_token, mode_path).status_code == 200
    assert check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **ids}, access_token).status_code == 200
    assert check_in(client, {"MessageType": "TokenUpdate", "Topic": TOPIC, "Token": b"\x01" * 32,
                             "PushMagic": "MAGIC", **ids}, access_token).status_code == 200
