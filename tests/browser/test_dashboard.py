"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, installed by
scripts/install-test-tools; Playwright never downloads one). Load the page, toggle a fault, run an enrollment and
watch it appear live, open a step, reset. Screenshots go to test-artifacts/screenshots/ for a reviewer.

The browser trusts exactly the console's key: the test checks the certificate chain with the lab CA first, then
pins that key's SPKI with --ignore-certificate-errors-spki-list. Certificate checks stay on for everything else,
as the last test shows.
"""
from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from lab import runner
from tests.conftest import ARTIFACTS, IDENTIFIER, PASSWORD

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ARTIFACTS / "screenshots"
WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)


def console_spki_pin(lab) -> str:
    """base64(SHA-256(SPKI)) of the key the console presents for localhost, once the lab CA has vouched for it."""
    context = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    with socket.create_connection(("127.0.0.1", lab.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed; run scripts/install-test-tools (tox does this)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, lab):
    pin = console_spki_pin(lab)
    browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                         args=[*FLAGS, f"--ignore-certificate-errors-spki-list={pin}"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def page(browser, lab):
    """One page for the module, loaded once: every later check must arrive live, without a reload."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, ignore_https_errors=False)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems
    page.goto(f"https://localhost:{lab.https_port}/")
    page.evaluate("window.__loadedOnce = 'yes'")
    yield page
    context.close()


def screenshot(target, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    for attempt in range(5):  # the live dashboard replaces a section when its events arrive: take the new one
        try:
            target.screenshot(path=str(path))
            break
        except PlaywrightError as exc:
            if "not attached" not in str(exc) or attempt == 4:
                raise
    print(f"screenshot: {path}")
    return path


def enroll_in_background(lab, device) -> threading.Thread:
    """A device enrolls while the browser watches; its trace lands in the timeline as a scenario run's does."""
    def go():
        d = device()
        trace = d.enroll(IDENTIFIER, PASSWORD)
        runner.record_trace(lab.events, trace, d, IDENTIFIER)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def test_the_dashboard_loads_and_listens(page, lab):
    expect(page.locator("#live")).to_have_class("live connected")
    expect(page.locator("h1")).to_contain_text("betterbag")
    for section in ("timeline", "faults", "abm", "mdm", "devices", "dns", "events"):
        expect(page.locator(f"section#{section}")).to_be_visible()
    expect(page.locator("#abm")).to_contain_text("mdm.lab.test")  # the registered service-discovery URL
    expect(page.locator("#timeline .empty")).to_be_visible()
    screenshot(page, "01-dashboard-loaded")


def test_toggling_a_fault_arms_it(page, lab):
    card = page.locator('.fault[data-fault="well-known-404"]')
    card.locator("input.fault-toggle").click()  # the page then redraws the card: judge by the new one
    expect(card).to_have_class("fault armed")
    expect(card).to_contain_text("armed on betterbag.test")
    assert [(a["name"], a["host"]) for a in lab.faults.armed()] == [("well-known-404", "betterbag.test")]
    expect(page.locator("#notice")).to_contain_text("armed well-known-404")
    screenshot(card, "02-fault-armed")


def test_an_enrollment_appears_live_through_the_fault(page, lab, device):
    enroll_in_background(lab, device).join(30)
    attempt = page.locator(f'.attempt[data-identifier="{IDENTIFIER}"]').first
    # the org domain's 404 sends this iOS 26.1 device to the ABM fallback, which still enrolls it
    expect(attempt).to_have_attribute("data-status", "enrolled")
    expect(attempt).to_contain_text("via ABM/ASM fallback")
    expect(attempt.locator(".lane-title")).to_have_text(["Device", "DNS", "Org domain", "ABM / ASM", "MDM",
                                                          "Apple Account"])
    failed = attempt.locator("details.step.tone-bad").first
    expect(failed).to_contain_text("404")
    expect(attempt.locator(".why").first).to_contain_text("well-known-http-404")
    # one click: the redacted request and response, and the device's verdict
    failed.locator("summary").click()
    detail = failed.locator(".event-detail")
    expect(detail).to_contain_text("Request")
    expect(detail).to_contain_text("404 Not Found")
    expect(detail).to_contain_text("The device: fail")
    expect(page.locator('.fault[data-fault="well-known-404"]')).to_contain_text("used 1×")
    assert page.evaluate("window.__loadedOnce") == "yes", "the page was reloaded"
    screenshot(page, "03-enrollment-live")
    screenshot(attempt, "04-enrollment-sequence")


def test_a_sign_in_step_shows_no_password(page):
    attempt = page.locator(f'.attempt[data-identifier="{IDENTIFIER}"]').first
    sign_in = attempt.locator("details.step", has_text="POST mdm.lab.test/auth/web").first
    sign_in.locator("summary").click()
    detail = sign_in.locator(".event-detail")
    expect(detail).to_contain_text("[redacted]")
    assert PASSWORD not in detail.inner_text()
    screenshot(sign_in, "05-sign-in-redacted")


def test_clearing_the_fault_and_enrolling_directly(page, lab, device):
    card = page.locator('.fault[data-fault="well-known-404"]')
    card.locator("input.fault-toggle").click()
    expect(card).not_to_have_class("fault armed")
    assert lab.faults.armed() == []
    enroll_in_background(lab, device).join(30)
    expect(page.locator(".attempt")).to_have_count(2)
    newest = page.locator(".attempt").first
    expect(newest).to_have_attribute("data-status", "enrolled")
    expect(newest).to_contain_text("direct")
    expect(page.locator("#mdm")).to_contain_text("enrolled")
    expect(page.locator("#event-rows tr.ev.component-mdm").first).to_be_visible()
    screenshot(page.locator("#mdm"), "06-mdm-view")


def test_an_unusable_fault_request_says_why(page, lab):
    card = page.locator('.fault[data-fault="slow-response"]')
    card.locator("input.fault-seconds").fill("500")  # beyond the board's 120 s
    card.locator("input.fault-toggle").click()  # not check(): the refusal may untick it before check() looks
    expect(page.locator("#notice.error")).to_contain_text("seconds must be a number between 0 and 120")
    expect(card.locator("input.fault-toggle")).not_to_be_checked()
    assert lab.faults.armed() == []
    refused = [p for p in page.problems if "status of 400" in p]
    assert len(refused) == 1  # the browser logs the API's 400; nothing else may go wrong
    page.problems.remove(refused[0])


def test_reset_from_the_dashboard(page, lab):
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#reset").click()
    expect(page.locator("#notice")).to_contain_text("back to its scenario")
    expect(page.locator("#mdm")).not_to_contain_text("BYOD")
    assert lab.mdm.snapshot()["enrollments"] == []
    expect(page.locator("#event-rows")).to_contain_text("lab reset to scenario betterbag")
    expect(page.locator(".attempt")).to_have_count(2)  # the history stays whole though the MDM forgot it
    screenshot(page, "07-after-reset")


def test_a_refused_profile_is_red_and_the_key_the_device_refused_is_marked(page, lab, device):
    """Issue 11 §4: the 200 that delivered a refused profile is red; the profile shows as the device saw it."""
    lab.faults.set("profile-access-rights", times=1)
    enroll_in_background(lab, device).join(30)
    attempt = page.locator(".attempt").first
    expect(attempt).to_have_attribute("data-status", "failed")
    delivered = attempt.locator("details.step", has_text="ENROLLMENT POST mdm.lab.test/enroll").first
    expect(delivered).to_have_class(re.compile(r"\btone-bad\b"))
    expect(delivered.locator(".result")).to_have_text("200 · refused")
    delivered.locator("summary").click()
    detail = delivered.locator(".event-detail")
    expect(detail).to_contain_text("The device: fail")
    expect(detail).to_contain_text("CMS SignedData")
    expect(detail.locator("mark.refused-key")).to_have_text("<key>AccessRights</key>")
    text = detail.inner_text()
    assert "bytes application/x-apple-aspen-config" not in text and "bytes of data, redacted" in text
    detail.locator("mark.refused-key").scroll_into_view_if_needed()
    screenshot(delivered, "08-refused-profile")


def test_the_sequence_and_the_events_read_at_a_glance(page, lab):
    enrolled = page.locator('.attempt[data-status="enrolled"]').first
    expect(enrolled.locator("details.step", has_text="mdm/checkin TokenUpdate")).to_have_count(1)
    expect(enrolled.locator("details.step", has_text="mdm/checkin Authenticate")).to_have_count(1)
    assert "enrolled: enrolled" not in page.locator("#timeline").inner_text()
    expect(page.locator("#event-rows tr.component-dns td:nth-child(6)").first).to_have_text(re.compile("^NOERROR$"))
    heights = [h for h in page.eval_on_selector_all("#event-rows tr", "rows => rows.map(r => "
                                                    "r.getBoundingClientRect().height)") if h]  # shown rows
    assert heights and max(heights) < 1.5 * min(heights), "an Events row wraps"
    assert not re.search(r"\b1[0-9]{9}(\.[0-9]+)?\b", page.locator("body").inner_text()), "a raw epoch time"
    expect(page.locator("#mdm")).to_contain_text("none: apple-as-web signs in again")
    screenshot(page.locator("#events"), "09-events-table")
    screenshot(page.locator("#mdm"), "10-mdm-panel")


def test_another_sites_page_cannot_change_the_lab(browser, lab):
    """F7 in a real browser: a page on another origin (here http://127.0.0.1:<other port>) posts a form to the
    console's reset; the gate refuses it, and the armed fault stays armed."""
    import http.server

    lab.faults.set("well-known-404")
    form = (f'<form id="f" method="POST" action="https://localhost:{lab.https_port}/api/reset"></form>'
            '<script>document.getElementById("f").submit()</script>').encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(form)))
            self.end_headers()
            self.wfile.write(form)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        with page.expect_response(lambda r: r.url.endswith("/api/reset")) as answer:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        assert answer.value.status == 403
        assert "another site" in answer.value.text()
        assert [a["name"] for a in lab.faults.armed()] == ["well-known-404"]  # no reset happened
        screenshot(page, "13-cross-site-refused")
    finally:
        context.close()
        server.shutdown()
        lab.faults.clear()


def test_the_page_broke_no_rule(page):
    assert page.problems == [], page.problems  # no script error, no Content-Security-Policy violation


def test_without_the_pin_the_browser_refuses_the_lab(playwright, lab):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    try:
        page = browser.new_page()
        with pytest.raises(PlaywrightError, match="ERR_CERT"):
            page.goto(f"https://localhost:{lab.https_port}/", timeout=WAIT_MS)
    finally:
        browser.close()
