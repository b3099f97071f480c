"""In an exercise the dashboard, /api/health and the enrollments' timeline do not name the scenario or its fault
(issue 11 §2): a trainee must find the fault from the symptom. Chromium, as in test_dashboard."""
from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from lab import runner
from lab.launcher import Lab
from lab.scenario import load
from tests.browser.test_dashboard import CHROMIUM, FLAGS, WAIT_MS, console_spki_pin, screenshot
from tests.conftest import IDENTIFIER, PASSWORD

SCENARIO = "profile-access-rights-byod"
FAULT = "profile-access-rights"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load(SCENARIO), tmp_path_factory.mktemp("exercise"), https_port=0, dns_port=0, fresh=True,
             conceal_faults=True) as running:
        yield running


def test_the_exercise_dashboard_names_neither_scenario_nor_fault(lab, device):
    d = device()
    trace = d.enroll(IDENTIFIER, PASSWORD)
    runner.record_trace(lab.events, trace, d, IDENTIFIER)
    assert trace.outcome == "failed"  # the fault acts
    session = requests.Session()
    session.trust_env = False
    health = session.get(f"https://localhost:{lab.https_port}/api/health", verify=str(lab.pki.cert_path),
                         timeout=5).text
    session.close()
    assert SCENARIO not in health and FAULT not in health
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*FLAGS, f"--ignore-certificate-errors-spki-list={console_spki_pin(lab)}"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"https://localhost:{lab.https_port}/")
            expect(page.locator('.attempt[data-status="failed"]')).to_have_count(1)  # the symptom is there
            title, heading = page.title(), page.locator("h1").inner_text()
            timeline = page.locator("#timeline").inner_text()
            for shown in (title, heading, timeline):
                assert SCENARIO not in shown and FAULT not in shown and "scenario" not in shown.lower()
            assert "exercise" in title
            step = page.locator("details.step.tone-bad").first
            step.locator("summary").click()
            expect(step.locator(".event-detail")).to_contain_text("The device: fail")
            assert FAULT not in step.inner_text()
            screenshot(page.locator("header").first, "11-exercise-header")
            screenshot(page.locator("#timeline"), "12-exercise-timeline")
        finally:
            browser.close()
