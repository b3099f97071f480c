"""The lab's other web pages in a real browser (Debian's Chromium through Playwright): the ABM admin site, where
an IT admin verifies a domain with a TXT record, and the MDM's sign-in page, which ends with the 308 to the device.

Chromium reaches the lab's hosts on 127.0.0.1 (--host-resolver-rules) and trusts exactly the keys the lab CA
vouched for (--ignore-certificate-errors-spki-list); certificate checks stay on otherwise.
"""
from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect, sync_playwright

from lab.launcher import Lab
from lab.scenario import load
from tests.browser.test_dashboard import CHROMIUM, FLAGS, WAIT_MS, screenshot
from tests.conftest import IDENTIFIER, PASSWORD


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """domain-not-verified: ABM has not verified betterbag.test yet."""
    with Lab(load("domain-not-verified"), tmp_path_factory.mktemp("pages"), fresh=True) as running:
        yield running


def spki_pin(lab, host: str) -> str:
    context = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    with socket.create_connection(("127.0.0.1", lab.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def page(lab):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed; run scripts/install-test-tools (tox does this)")
    hosts = [lab.scenario.abm_hosts["admin"], lab.scenario.mdm.host]
    pins = ",".join(spki_pin(lab, h) for h in hosts)
    rules = ", ".join(f"MAP {h} 127.0.0.1" for h in hosts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            *FLAGS, f"--host-resolver-rules={rules}", f"--ignore-certificate-errors-spki-list={pins}"])
        context = browser.new_context(viewport={"width": 1200, "height": 900}, ignore_https_errors=False)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        yield page
        browser.close()


def test_an_admin_verifies_the_domain_on_the_abm_site(page, lab):
    page.goto(lab.origin(lab.scenario.abm_hosts["admin"]) + "/")
    value = lab.abm.verification_record("betterbag.test")
    expect(page.get_by_text(value)).to_be_visible()
    page.get_by_role("button", name="Verify").first.click()
    expect(page.locator("#notice")).to_contain_text("could not be verified")
    screenshot(page, "abm-01-not-verified")

    lab.zone.add("betterbag.test", "TXT", value)  # the admin publishes the record in the domain's DNS
    page.get_by_role("button", name="Verify").first.click()
    expect(page.locator("#notice")).to_contain_text("betterbag.test is verified")
    expect(page.get_by_text("Verified", exact=True)).to_be_visible()
    screenshot(page, "abm-02-verified")
    assert lab.abm.snapshot()["domains"][0]["verified"] is True


def test_the_sign_in_page_refuses_a_wrong_password_and_ends_with_308_to_the_device(page, lab):
    page.goto(lab.urls["mdm"]["auth_url"] + f"?user-identifier={IDENTIFIER}")
    expect(page.locator("#user-identifier")).to_have_value(IDENTIFIER)
    page.fill("#password", "not-it")
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("alert")).to_contain_text("not correct")
    screenshot(page, "signin-01-refused")

    page.fill("#password", PASSWORD)
    after = lab.events.last_id()
    with page.expect_event("requestfailed", lambda r: "/auth/web" in r.url) as failed:
        page.get_by_role("button", name="Sign In").click()
    # A browser does not follow the 308 to the device's callback scheme (headless Chromium blocks external
    # protocols); only ASWebAuthenticationSession takes it. The lab's side of the exchange shows the redirect.
    assert failed.value.failure and "CERT" not in failed.value.failure, failed.value.failure
    exchange = next(e for e in lab.events.query(after=after) if e["path"] == "/auth/web" and e["method"] == "POST")
    assert exchange["status"] == 308
    location = exchange["detail"]["response_headers"]["Location"]
    assert location.startswith("apple-remotemanagement-user-login://authentication-results?access-token=")
    assert "[redacted]" in location
