"""What the MDM tells a device about its messages: its enrollment request (MachineInfo), each check-in message and
command report held against Apple's schema facts (lab.schema, derived from apple/device-management) for the device
that sent it (platform, OS version, enrollment type, channel), so an MDM developer testing a device, or the lab's
own device, learns exactly which key is missing, forbidden, not yet introduced or of the wrong type.

``strict`` (the default) answers 400 with the problems; ``warn`` answers as usual and records them; ``off`` skips.
Either way the problems are in the timeline event's detail.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import has_request_context

from lab import schema
from lab.flaskapp import label
from lab.schema import check as schema_check
from mocks.mdm.errors import BadEnrollmentRequest

MODES = ("warn", "strict", "off")
# What Apple may have added after the facts were derived: from a device whose OS is newer than any version the facts
# mention (a real iPhone on the LAN), these are recorded with "judged": false and never refused.
UNKNOWABLE = frozenset({"unknown-name", "unknown-key", "unknown-value", "value-not-allowed"})
PLATFORMS = {"iPhone": "iOS", "iPad": "iPadOS", "Mac": "macOS", "RealityDevice": "visionOS", "AppleTV": "tvOS",
             "Watch": "watchOS"}


@dataclass(frozen=True)
class Device:
    """What the MDM knows of the device a message comes from."""
    platform: str
    os_version: str
    enrollment: str  # the profile's EnrollmentMode: BYOD or ADDE
    channel: str = "device"


def device_of(product: str | None, os_version: str | None, mode: str, message: dict) -> Device | None:
    """The device a message is read for, or None when the MDM does not know its platform and OS yet."""
    platform = next((p for family, p in PLATFORMS.items() if (product or "").startswith(family)), None)
    if platform is None or not os_version:
        return None
    user_channel = platform == "macOS" and ("UserID" in message or "EnrollmentUserID" in message)
    return Device(platform, os_version, mode, "user" if user_channel else "device")


def problems(kind: str, name: str | None, message: dict, device: Device | None, checker=None) -> list[dict]:
    """The schema's errors for ``message`` as JSON-ready dictionaries (path, code, message); warnings are left out."""
    checker = checker or schema_check
    if device is None:
        return []
    if kind == "response" and name is not None and message.get("Status") != "Acknowledged" \
            and not _known_here(name, device):
        name = None  # a command the device does not have: it answers with the bare report (Error)
    found = checker(kind, name, message, platform=device.platform, os_version=device.os_version,
                    enrollment=device.enrollment, channel=device.channel)
    newer = schema.version(device.os_version) > schema.newest_known(device.platform)
    return [{"path": p.path, "code": p.code, "message": p.message,
             **({"judged": False} if newer and p.code in UNKNOWABLE else {})}
            for p in found if getattr(p, "severity", "error") == "error"]


def refusable(found: list[dict]) -> bool:
    """Whether strict refuses a message with these problems: not for what a newer OS may have added."""
    return any(p.get("judged", True) for p in found)


def _known_here(request_type: str, device: Device) -> bool:
    """Apple's schema has this command on this device's platform, OS version and enrollment."""
    if request_type not in schema.names("command"):
        return False
    return not any(p.severity == "error" for p in schema.supported(
        "command", request_type, platform=device.platform, os_version=device.os_version,
        enrollment=device.enrollment, channel=device.channel))


def allowed(kind: str, name: str | None, device: Device | None) -> frozenset[str]:
    """The keys Apple's schema allows in this message from this device (empty when either is unknown)."""
    if device is None:
        return frozenset()
    try:
        return frozenset(schema.keys_for(kind, name, platform=device.platform, os_version=device.os_version,
                                         enrollment=device.enrollment, channel=device.channel))
    except schema.UnknownName:
        return frozenset()


def summary_of(found: list[dict]) -> str:
    first = found[0]
    where = f"{first['path']}: " if first["path"] else ""
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{len(found)} schema problem(s): {where}{first['message']}{more}"


def machine_info_device(info: dict, mode: str) -> Device | None:
    """The device an enrollment request is read for: its PRODUCT's platform and its OS_VERSION. A request without
    OS_VERSION is read as from the last OS before Apple added the key (iOS 16, macOS 13), unless the platform had it
    from the start (then it is missing)."""
    product, os_version = info.get("PRODUCT"), info.get("OS_VERSION")
    platform = next((p for family, p in PLATFORMS.items() if str(product or "").startswith(family)), None)
    if platform is None:
        return None
    if not isinstance(os_version, str) or not os_version:
        came, first = (schema.introduced("document", "MachineInfo", key, platform) for key in ("OS_VERSION", "PRODUCT"))
        if came is None or first is None:
            return None
        major = int(came.split(".")[0]) - 1
        os_version = first if came == first or major < int(first.split(".")[0]) else str(major)
    return Device(platform, os_version, mode)


def check_enrollment_request(info: dict, mode: str, policy: str, checker=None) -> list[dict]:
    """Hold the enrollment request's MachineInfo against Apple's schema for the enrollment type this endpoint serves
    (``mode``: BYOD for mdm-byod, ADDE for mdm-adde). ``policy`` strict refuses it (BadEnrollmentRequest
    ``schema-violation``, every problem in the body); warn returns the problems; either way they go to the
    timeline event's detail."""
    if policy == "off":
        return []
    device = machine_info_device(info, mode)
    found = problems("document", "MachineInfo", info, device, checker)
    if not found:
        return []
    assert device is not None  # problems are found only for a device whose platform is known
    if has_request_context():
        label(detail={"schema_problems": found})
    if policy == "strict" and refusable(found):
        what = schema.ENROLLMENTS[schema.Context(device.platform, device.os_version, mode).enrollment]
        raise BadEnrollmentRequest(f"the enrollment request's MachineInfo departs from Apple's schema for "
                                   f"{device.platform} {device.os_version} ({what}): {summary_of(found)}",
                                   code="schema-violation", problems=found)
    return found
