"""The sign-in browser's cookie jar (lab.device.cookies), against RFC 6265's storage and sending rules."""
from __future__ import annotations

import pytest

from lab.device.cookies import CookieJar


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def jar(clock):
    return CookieJar(clock)


def test_a_host_only_cookie_goes_back_to_its_host_only(jar):
    jar.receive("mdm.lab.test", "/auth/web", ["mdmlab_session=abc; Secure; HttpOnly; SameSite=Lax"])
    assert jar.header("mdm.lab.test", "/anything") is None  # default path is /auth
    assert jar.header("mdm.lab.test", "/auth/web") == "mdmlab_session=abc"
    assert jar.header("MDM.lab.test", "/auth") == "mdmlab_session=abc"
    assert jar.header("sub.mdm.lab.test", "/auth/web") is None
    assert jar.header("mdm.lab.test", "/auth/web", secure=False) is None  # Secure: https only


def test_a_domain_cookie_covers_subdomains_and_a_foreign_domain_is_refused(jar):
    jar.receive("idp.betterbag.test", "/", ["sso=1; Domain=.betterbag.test; Path=/",
                                            "evil=1; Domain=lab.test; Path=/"])
    assert jar.header("betterbag.test", "/") == "sso=1"
    assert jar.header("login.idp.betterbag.test", "/x") == "sso=1"
    assert jar.header("notbetterbag.test", "/") is None
    assert jar.header("mdm.lab.test", "/") is None
    assert [c.stored_domain for c in jar] == [".betterbag.test"]


def test_path_matching_and_longest_path_first(jar):
    jar.receive("mdm.lab.test", "/", ["a=1; Path=/", "b=2; Path=/auth", "c=3; Path=/auth/"])
    assert jar.header("mdm.lab.test", "/auth/web") == "c=3; b=2; a=1"
    assert jar.header("mdm.lab.test", "/authority") == "a=1"  # /auth does not path-match /authority
    assert jar.header("mdm.lab.test", "/auth") == "b=2; a=1"


def test_max_age_wins_over_expires_and_a_past_expiry_deletes(jar, clock):
    jar.receive("mdm.lab.test", "/", ["s=1; Path=/; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert jar.header("mdm.lab.test", "/") == "s=1"
    clock.now += 61
    assert jar.header("mdm.lab.test", "/") is None and len(jar) == 0
    jar.receive("mdm.lab.test", "/", ["t=1; Path=/", "u=2; Path=/; Expires=Wed, 01 Jan 2100 00:00:00 GMT"])
    jar.receive("mdm.lab.test", "/", ["t=; Path=/; Max-Age=0", "u=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert jar.header("mdm.lab.test", "/") is None


@pytest.mark.parametrize("field", ["", "novalue", "=empty-name", "; Path=/", "x=1; Max-Age=soon; Expires=never"])
def test_malformed_fields_are_ignored_or_read_leniently(jar, field):
    jar.receive("mdm.lab.test", "/", [field])
    assert jar.header("mdm.lab.test", "/") in (None, "x=1")


def test_a_kept_session_comes_back_as_it_was_stored(jar, clock):
    jar.receive("idp.betterbag.test", "/", ["sso=1; Domain=betterbag.test; Path=/; Secure; Max-Age=3600"])
    jar.receive("mdm.lab.test", "/auth/web", ["mdmlab_session=abc; Path=/; Secure"])
    stored = [{"name": c.name, "value": c.value, "domain": c.stored_domain, "path": c.path, "secure": c.secure,
               "expires": c.expires} for c in jar]
    restored = CookieJar(clock)
    for cookie in stored:
        restored.set(**cookie)
    for host in ("betterbag.test", "idp.betterbag.test", "mdm.lab.test"):
        assert restored.header(host, "/auth/web") == jar.header(host, "/auth/web")
    restored.set(name="old", value="v", domain="mdm.lab.test", path="/", secure=True)  # stored before "expires"
    assert "old=v" in restored.header("mdm.lab.test", "/")


def test_a_cookie_for_another_host_is_refused_and_noted_as_a_web_inspector_shows_it(jar):
    jar.receive("mdm.lab.test", "/oauth2/authorize", ["mdm_signin=abc; Domain=idp.betterbag.test; Secure; Path=/",
                                                      "mdm_ok=1; Domain=lab.test; Path=/"])
    assert jar.header("mdm.lab.test", "/auth/federated/callback") == "mdm_ok=1"
    assert jar.header("idp.betterbag.test", "/") is None  # nor is it handed to the other host
    assert jar.refused == ["mdm_signin from mdm.lab.test with Domain=idp.betterbag.test"]
