"""Renewing the enrollment profile through the lab's real DNS and TLS: the MDM sends the enrollment profile again
with InstallProfile; the same profile renews (it used to be refused as "Multiple MDM instances"), one whose
ServerURL changed is refused with the text devices show, and the enrollment keeps working either way."""
from __future__ import annotations

import base64
import plistlib

import pytest

from lab import cms
from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_mdm_e2e import running


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with running("betterbag", tmp_path_factory.mktemp("renewal")) as env:
        yield env


def enrolled_keeping_its_profile(env):
    phone, kept = env.device(), []
    request = phone.session.request

    def record(method, url, *args, **kwargs):
        response = request(method, url, *args, **kwargs)
        if method == "POST" and response.status_code == 200 and "Authorization" in kwargs.get("headers", {}):
            kept.append(response.content)
        return response

    phone.session.request = record
    assert phone.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    phone.session.request = request
    return phone, kept[0]


def install(env, phone, body: bytes) -> dict:
    uuid = env.queue(phone, "InstallProfile", Payload=base64.b64encode(body).decode())
    assert phone.sync().outcome in ("synced", "commands-failed")  # the result says which
    return env.results(phone.enrollment.enrollment_id)[uuid]


def test_the_same_enrollment_profile_renews(env):
    phone, profile = enrolled_keeping_its_profile(env)
    result = install(env, phone, profile)
    assert result["status"] == "Acknowledged", result
    assert phone.enrollment is not None and phone.sync().outcome == "synced"


def test_a_renewal_with_another_server_url_is_refused_and_the_enrollment_stays(env):
    phone, signed = enrolled_keeping_its_profile(env)
    profile = plistlib.loads(cms.parse(signed).content if cms.looks_like_cms(signed) else signed)
    for payload in profile["PayloadContent"]:
        if payload["PayloadType"] == "com.apple.mdm":
            payload["ServerURL"] += "?tenant=2"
    result = install(env, phone, plistlib.dumps(profile))
    assert result["status"] == "Error"
    assert "Update to MDM profile contains different server URL." in str(result)
    assert phone.enrollment is not None and phone.sync().outcome == "synced"
