"""The simulated device: walks account-driven enrollment through the lab's real DNS and TLS."""
from lab.device.device import FAMILIES, Device, Network
from lab.device.trace import DeviceFailure, Trace

__all__ = ["Device", "DeviceFailure", "FAMILIES", "Network", "Trace"]
