"""The console's view of the simulated devices saved beside a lab (by `mdmlab enroll`): the control plane's only
reader of the device store, so the launcher builds servers and never opens a client's store."""
from __future__ import annotations

from lab.device.store import DIRECTORY, DeviceStore


def listing(lab, limit: int = 50) -> list[dict] | None:
    """The devices with their data-separation state, the newest ``limit``; None when none was ever saved."""
    if not (lab.state_dir / DIRECTORY).exists():
        return None
    store = DeviceStore(lab.state_dir)
    network = lab.network()
    try:
        described = []
        for row in store.listing()[-limit:]:
            device = store.load(row["device_id"], network)
            try:
                described.append(device.describe())
            finally:
                device.close()
        return described
    finally:
        store.close()
