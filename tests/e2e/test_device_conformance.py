"""The device's messages through the lab's real DNS and TLS conform to Apple's schema: every check-in message and
command report an iPhone, a Mac (with its user channel) and a Vision Pro send while they enroll in User
Enrollment, run the commands an admin queues and sign out, checked against lab.schema as sent."""
from __future__ import annotations

import plistlib

import pytest

from lab import cms, schema
from lab.device import Device, messages
from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_mdm_e2e import running

COMMANDS = (("DeviceInformation", {"Queries": ["OSVersion", "ModelName", "UDID", "DeviceName"]}),
            ("SecurityInfo", {}), ("ProfileList", {}), ("CertificateList", {}), ("ManagedApplicationList", {}),
            ("InstallApplication", {"iTunesStoreID": 1_660_000_002, "Options": {"PurchaseMethod": 1}}),
            ("EraseDevice", {}))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with running("betterbag", tmp_path_factory.mktemp("conformance")) as env:
        yield env


def recording(device: Device) -> list[dict]:
    sent, request = [], device.session.request

    def record(method, url, *args, **kwargs):
        if method == "PUT":
            sent.append(plistlib.loads(kwargs["data"]))
        elif method == "POST" and cms.looks_like_cms(kwargs.get("data") or b""):  # the enrollment request
            sent.append({"MachineInfo": plistlib.loads(cms.parse(kwargs["data"]).content)})
        return request(method, url, *args, **kwargs)

    device.session.request = record
    device.session.put = lambda url, **kwargs: record("PUT", url, **kwargs)
    return sent


@pytest.mark.parametrize("family, version", [("iPhone", "26.1"), ("Mac", "14.0"), ("Vision", "2.2")])
def test_what_the_device_sends_to_the_lab_conforms_to_apples_schema(env, family, version):
    device = env.device(model_family=family, os_version=version)
    sent = recording(device)
    assert device.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    queued = {env.queue(device, request_type, **params): request_type for request_type, params in COMMANDS}
    assert device.sync().outcome in ("synced", "commands-failed")  # some commands are refused on purpose
    assert device.unenroll().outcome == "unenrolled"
    context = dict(platform=device.os_name, os_version=version, enrollment="user")
    checked = []
    for message in sent:
        if "MachineInfo" in message:
            kind, name, message = "document", "MachineInfo", message["MachineInfo"]
            assert not {"UDID", "SERIAL", "IMEI", "MEID"} & set(message)  # User Enrollment never names the device
        elif "MessageType" in message:
            kind, name = "checkin", message["MessageType"]
        else:
            kind, name = "response", queued.get(message.get("CommandUUID"))
            if message["Status"] == "Error" and name == "EraseDevice":  # refused: the bare report
                name = None
        where = "user" if "EnrollmentUserID" in message else "device"
        errors = [str(p) for p in schema.check(kind, name, message, channel=where, **context) if p.severity == "error"]
        assert errors == [], (kind, name, errors)
        checked.append(name)
    assert {"MachineInfo", "Authenticate", "TokenUpdate", "CheckOut", "SecurityInfo", "ProfileList"} <= set(checked)
    assert any("EnrollmentUserID" in m for m in sent) == (family == "Mac")  # the Mac's user channel too


def test_a_strict_mdm_refuses_an_enrollment_request_that_names_a_user_enrolled_device_and_the_trace_says_why(
        env, monkeypatch):
    """The MDM (strict by default) holds the signed MachineInfo against Apple's schema, through DNS and TLS: a User
    Enrollment request that carries UDID is refused before sign-in, the device's trace names the key and the rule,
    and the timeline event has every problem."""
    real = messages.machine_info
    monkeypatch.setattr(messages, "machine_info", lambda client, udid, serial, mode: {
        **real(client, udid, serial, mode), "UDID": udid})  # a device that leaks its UDID under User Enrollment
    mark = env.lab.events.last_id()
    trace = env.device(model_family="iPhone", os_version="26.1").enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis, trace.steps[-1].stage) == ("failed", "enroll-http-400", "authentication")
    assert "UDID is forbidden under User Enrollment on iOS" in trace.explanation
    assert "schema-violation" in trace.explanation and "MachineInfo" in trace.explanation
    [event] = [e for e in env.lab.events.query(after=mark, component="mdm") if e["path"] == "/enroll"]
    assert event["status"] == 400
    assert event["detail"]["schema_problems"] == [{"path": "UDID", "code": "forbidden-under-user-enrollment",
                                                   "message": "UDID is forbidden under User Enrollment on iOS; "
                                                              "leave it out"}]
