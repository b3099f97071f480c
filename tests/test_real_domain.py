"""The instructor with real devices: the real-domain template, `mdmlab up`'s check of it, and the banner's
check of what it tells a phone (issue 11 §1)."""
from __future__ import annotations

from pathlib import Path

from lab import config
from lab.device import Device
from lab.launcher import Lab
from lab.scenario import load
from tests.e2e.test_cli import mdmlab

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "fixtures" / "templates" / "real-domain.toml"


def test_phone_instructions_are_refused_for_loopback_and_warned_for_other_ports():
    refusal, warnings = config.phone_readiness("127.0.0.5", 53, 443)
    assert refusal and "loopback" in refusal and "--listen" in refusal and not warnings
    assert config.phone_readiness("192.0.2.10", 53, 443) == (None, [])
    refusal, warnings = config.phone_readiness("192.0.2.10", 10053, 8443)
    assert refusal is None and len(warnings) == 2
    assert "--dns-port 53" in warnings[0] and "--https-port 443" in warnings[1]


def test_the_template_names_its_steps_and_every_placeholder_is_caught():
    text = TEMPLATE.read_text()
    for step in ("1. Copy this file", "2. Start the lab", "3. On the device", "4. Watch the dashboard"):
        assert step in text
    problems = config.template_problems(load(str(TEMPLATE)))
    assert len(problems) == 3 and all("placeholder" in p and "\n" not in p for p in problems)


def test_mdmlab_up_refuses_the_template_until_it_is_filled_in(tmp_path):
    result = mdmlab("up", "--scenario", str(TEMPLATE), "--state-dir", str(tmp_path / "s"), "--https-port", "0",
                    "--dns-port", "0")
    assert result.returncode == 1 and "your-domain.invalid" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s" / "lab.json").exists()


def test_a_filled_in_template_enrolls_through_the_labs_dns_and_tls(tmp_path):
    filled = tmp_path / "my-org.toml"
    filled.write_text(TEMPLATE.read_text().replace("your-domain.invalid", "school.example"))
    scenario = load(str(filled))
    assert config.template_problems(scenario) == []
    with Lab(scenario, tmp_path / "lab") as lab:
        device = Device(lab.network())
        try:
            trace = device.enroll("first.last@school.example", "the-password-you-set-in-the-lab")
        finally:
            device.close()
    assert trace.outcome == "enrolled", trace.render()


def test_the_banner_refuses_phone_steps_for_a_loopback_lab(tmp_path):
    from tests.e2e.test_cli import start_lab, stop_lab

    banner = stop_lab(start_lab(tmp_path / "s", "--real-device", "--listen", "127.0.0.5", "--upstream", "127.0.0.1"))
    assert "no phone instructions: 127.0.0.5 is a loopback address" in banner
    assert "Settings > Wi-Fi" not in banner
