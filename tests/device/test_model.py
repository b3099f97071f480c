"""lab.device.model: the frozen Client that the device and the probe both build, and Trace.stop."""
from __future__ import annotations

import dataclasses

import pytest

from lab.device import DeviceFailure, Trace
from lab.device.model import Client
from lab.device.trace import FAIL


def test_a_client_is_frozen_and_derives_its_facts_from_model_and_os():
    client = Client("Vision", "2.2")
    assert (client.model_family_param, client.product, client.os_name) == ("RealityDevice", "RealityDevice14,1",
                                                                           "visionOS")
    assert client.version == (2, 2) and client.has_abm_fallback
    with pytest.raises(dataclasses.FrozenInstanceError):
        client.strict = True


def test_a_client_defaults_its_os_and_refuses_unknown_models_and_versions():
    assert Client("Mac").os_version == "26.1"
    with pytest.raises(ValueError, match="not one of"):
        Client("Watch")
    with pytest.raises(ValueError, match="X.Y"):
        Client("iPhone", "eighteen")


def test_a_client_says_which_enrollment_its_os_cannot_do():
    assert "needs iOS 17.0" in Client("iPhone", "16.4").unsupported_version_reason("mdm-adde")
    assert Client("iPhone", "16.4").unsupported_version_reason("mdm-byod") is None


def test_the_probe_builds_a_client_for_apples_real_host(monkeypatch):
    from lab import probe

    seen = {}

    def discover(client, http, domain, identifier, trace, **kwargs):
        seen["client"] = client
        raise DeviceFailure("discovery", "stop-here", "enough")

    monkeypatch.setattr(probe.discovery, "discover", discover)
    monkeypatch.setattr(probe.SystemResolver, "resolve", lambda self, host: "127.0.0.1")
    trace = probe.probe("eliza@betterbag.test", model_family="Vision")
    assert trace.diagnosis == "stop-here"
    client = seen["client"]
    assert isinstance(client, Client) and client.model_family_param == "RealityDevice"
    assert client.apple_host == "axm-adm-enroll.apple.com" and client.discovery_timeout == 30.0


def test_trace_stop_records_the_failed_step_and_raises_its_diagnosis():
    trace = Trace()
    with pytest.raises(DeviceFailure) as raised:
        trace.stop("discovery", "well-known-http-404", "fix the path", "GET x → 404", response={"status": 404})
    assert (raised.value.stage, raised.value.code, raised.value.explanation) == ("discovery", "well-known-http-404",
                                                                                 "fix the path")
    [step] = trace.steps
    assert (step.verdict, step.code, step.action, step.response) == (FAIL, "well-known-http-404", "GET x → 404",
                                                                     {"status": 404})
