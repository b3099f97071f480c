"""Signing in for the device (stages 2 and 4): the web session of a sign-in (ephemeral, or the Enrollment SSO app's
own, kept in its container), the challenged method, and renewing the access token when the MDM asks for a new one.
"""
from __future__ import annotations

import json

from lab.device import oauth2
from lab.device.authentication import OAUTH2, SIMPLE, Challenge, Credentials, simple_sign_in
from lab.device.cookies import CookieJar
from lab.device.http import DeviceHTTP
from lab.device.separation import MANAGED_APPS, Unreadable
from lab.device.trace import OK, DeviceFailure, Trace

ONGOING = "ongoing-authentication"


def sso_app(device) -> str | None:
    return next((a.bundle_id for a in device.contents.managed_apps() if a.source == "esso"), None)


def _browser(device) -> DeviceHTTP:
    """The web session for a sign-in: ephemeral, or the Enrollment SSO app's own (kept in its container)."""
    jar = CookieJar()
    browser = DeviceHTTP(device.resolver, device.network.ca_cert, cookies=jar)
    app = sso_app(device)
    if app:
        try:
            for cookie in json.loads(device.contents.vault.open(MANAGED_APPS, f"{app}/web-session")):
                jar.set(**cookie)
        except (Unreadable, ValueError, TypeError):  # no session kept, or not one this browser wrote
            pass
    return browser


def _keep_browser(device, browser: DeviceHTTP) -> None:
    app = sso_app(device)
    if app and device.contents.vault is not None and device.contents.vault.readable:
        jar = [{"name": c.name, "value": c.value, "domain": c.stored_domain, "path": c.path, "secure": c.secure,
                "expires": c.expires} for c in browser.cookies or ()]
        device.contents.vault.seal(MANAGED_APPS, f"{app}/web-session", json.dumps(jar).encode())


def sign_in(device, challenge: Challenge, identifier: str, password: str | None, trace: Trace,
            stage: str) -> Credentials:
    browser = _browser(device)
    try:
        if challenge.method == SIMPLE:
            credentials = simple_sign_in(device.client, browser, challenge, identifier, password, trace, stage=stage)
        else:
            credentials = oauth2.sign_in(device.client, device.session, browser, challenge, identifier, password,
                                         trace, stage=stage)
        _keep_browser(device, browser)
        return credentials
    finally:
        browser.close()


def set_credentials(device, credentials: Credentials) -> None:
    device.enrollment.credentials = credentials
    device.contents.keychain_put("credentials", json.dumps(credentials.to_dict()).encode())


def renew(device, challenge: Challenge, trace: Trace, *, refresh_first: bool) -> None:
    """A new access token: OAuth 2 refreshes silently first; otherwise (or refused) the person signs in."""
    current = device.enrollment.credentials
    if refresh_first and challenge.method == OAUTH2 and current.method == OAUTH2 and current.refresh_token:
        renewed = oauth2.refresh(device.client, device.session, current, trace, stage=ONGOING)
        if renewed is not None:
            set_credentials(device, renewed)
            return
    who = "the Enrollment SSO app signs in (single sign-on)" if sso_app(device) else \
        "the device asks the person to sign in again (Settings shows a re-authenticate control)"
    trace.add(ONGOING, "sign in again", OK, who)
    try:
        renewed = sign_in(device, challenge, current.identifier, device.password, trace, ONGOING)
    except DeviceFailure as failure:
        if failure.code == "password-needed":
            raise DeviceFailure(ONGOING, "reauth-needs-user", "the access token must be renewed and only the "
                                "person can do it: sign in again in Settings (a sync given the password); "
                                "the enrollment stays, commands wait") from None
        raise
    set_credentials(device, renewed)
