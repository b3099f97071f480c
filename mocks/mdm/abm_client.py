"""The MDM's client for ABM's Device Assignment API: registering its service-discovery URL (PROTOCOL.md 1.8).

It goes over HTTPS through the lab DNS, as in production, never by touching ABM's state.
"""
from __future__ import annotations

import requests

from lab import oauth1

HEADERS = {"X-Server-Protocol-Version": "3", "User-Agent": "mdmlab-mdm/0.1"}
PROFILE_PATH = "/account-driven-enrollment/profile"


class RegistrationError(RuntimeError):
    pass


class DEPClient:
    def __init__(self, api_origin: str, token: dict, session: requests.Session):
        self.api_origin, self.token, self.session = api_origin.rstrip("/"), token, session
        self.auth_session: str | None = None

    def _new_session(self) -> str:
        url = self.api_origin + "/session"
        header = oauth1.authorization_header("GET", url, self.token["consumer_key"], self.token["consumer_secret"],
                                             self.token["access_token"], self.token["access_secret"])
        response = self.session.get(url, headers={**HEADERS, "Authorization": header}, timeout=10)
        if response.status_code != 200:
            raise RegistrationError(f"GET /session answered {response.status_code}: {response.text[:200]}")
        self.auth_session = response.json()["auth_session_token"]
        return self.auth_session

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        """One DEP call; a 401 gets a new session and one retry, as Apple's clients do."""
        for attempt in range(2):
            auth_session = self.auth_session if self.auth_session is not None else self._new_session()
            headers = {**HEADERS, "X-ADM-Auth-Session": auth_session,
                       "Content-Type": "application/json;charset=UTF8"}
            response = self.session.request(method, self.api_origin + path, headers=headers, timeout=10, **kwargs)
            if response.headers.get("X-ADM-Auth-Session"):
                self.auth_session = response.headers["X-ADM-Auth-Session"]
            if response.status_code != 401 or attempt:
                return response
            self.auth_session = None
        return response

    def register_discovery_url(self, url: str) -> None:
        response = self.call("POST", PROFILE_PATH, json={"mdm_service_discovery_url": url})
        if response.status_code != 200:
            raise RegistrationError(f"POST {PROFILE_PATH} answered {response.status_code}: {response.text[:200]}")

    def account(self) -> dict:
        """AccountDetail (GET /account): the server's server_uuid, org name, ..."""
        response = self.call("GET", "/account")
        if response.status_code != 200:
            raise RegistrationError(f"GET /account answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def discovery_url(self) -> str | None:
        response = self.call("GET", PROFILE_PATH)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistrationError(f"GET {PROFILE_PATH} answered {response.status_code}: {response.text[:200]}")
        return response.json()["mdm_service_discovery_url"]
