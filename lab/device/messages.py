"""The messages the device puts on the wire, fitted to Apple's schema (lab.schema) for its model, OS version,
enrollment type and channel. The device knows more about itself than any one message may say: each message is
built from the device's facts, and the schema decides which of them go in (nested dictionaries and arrays too),
so a key Apple forbids here, one this OS version does not have yet, or one in no schema never leaves the device.
"""
from __future__ import annotations

from functools import lru_cache

from lab import schema
from lab.device.model import Client

ENROLLMENT = {"BYOD": "user", "ADDE": "adde"}


@lru_cache(maxsize=2048)
def keys(kind: str, name: str | None, platform: str, os_version: str, mode: str, channel: str = "device") -> dict:
    return schema.keys_for(kind, name, platform=platform, os_version=os_version, enrollment=ENROLLMENT[mode],
                           channel=channel)


@lru_cache(maxsize=2048)
def refusal(kind: str, name: str, platform: str, os_version: str, mode: str,
            channel: str = "device") -> schema.Problem | None:
    """Why Apple's schema says this device cannot take or send ``name`` at all, or None."""
    problems = [p for p in schema.supported(kind, name, platform=platform, os_version=os_version,
                                            enrollment=ENROLLMENT[mode], channel=channel) if p.severity == "error"]
    return problems[0] if problems else None


def fit(kind: str, name: str | None, facts: dict, client: Client, mode: str, channel: str = "device") -> dict:
    """The message of ``kind``/``name`` this device sends: the keys of ``facts`` its schema allows here."""
    return _fit(facts, keys(kind, name, client.os_name, client.os_version, mode, channel))


def machine_info(client: Client, udid: str, serial: str, mode: str) -> dict:
    """The enrollment request's signed MachineInfo (PROTOCOL.md 2.1): what the device says of itself, fitted to
    Apple's MachineInfo for its OS version and enrollment type, so User Enrollment leaves out UDID and SERIAL and
    an OS before iOS 17 / macOS 14 leaves out OS_VERSION."""
    facts = {"UDID": udid, "SERIAL": serial, "PRODUCT": client.product, "VERSION": client.build,
             "OS_VERSION": client.os_version, "LANGUAGE": client.language}
    return fit("document", "MachineInfo", facts, client, mode)


def report_name(request_type: str | None, client: Client, mode: str) -> str | None:
    """The schema entry a command's report follows: its own, or the bare report when the device does not know it."""
    if request_type is None:
        return None
    try:
        known = refusal("command", request_type, client.os_name, client.os_version, mode) is None
    except schema.UnknownName:
        known = False
    return request_type if known else None


def _fit(value: dict, allowed: dict) -> dict:
    wildcard = next((k for k in allowed.values() if k.wildcard), None)
    out = {}
    for name, item in value.items():
        key = allowed.get(name) if name in allowed and not allowed[name].wildcard else wildcard
        if key is not None:
            out[name] = _fit_value(item, key)
    return out


def _fit_value(value, key):
    if isinstance(value, dict) and key.keys:
        return _fit(value, key.keys)
    if isinstance(value, list) and key.item is not None:
        return [_fit_value(item, key.item) for item in value]
    return value
