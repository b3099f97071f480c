"""The console's view of saved devices (lab/console/devices.py), through the lab's real DNS and TLS."""
from __future__ import annotations

from lab.device.store import DeviceStore
from lab.net import LabResolver, lab_session
from tests.conftest import IDENTIFIER, PASSWORD


def test_a_saved_device_shows_in_the_lab_state_and_the_launcher_never_opens_the_store(lab, device):
    session = lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
    url = f"https://{lab.scenario.console_host}:{lab.https_port}/api/state/devices"
    try:
        assert session.get(url, timeout=10).json() == {"devices": None}
        phone = device()
        assert phone.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
        store = DeviceStore(lab.state_dir)
        try:
            device_id = store.save(phone)
        finally:
            store.close()
        listed = session.get(url, timeout=10).json()["devices"]
    finally:
        session.close()
    assert [d["device_id"] for d in listed] == [device_id]
    assert not hasattr(lab, "devices")
