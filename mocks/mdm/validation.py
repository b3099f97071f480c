"""What the MDM tells a device about its messages: each check-in message and command report held against Apple's
schema facts (lab.schema, derived from apple/device-management) for the device that sent it (platform, OS
version, enrollment type, channel), so an MDM developer testing a device, or the lab's own device, learns exactly
which key is missing, forbidden, not yet introduced or of the wrong type.

``strict`` answers 400 with the problems; ``warn`` (the default) answers as usual and records them; ``off`` skips.
Either way the problems are in the timeline event's detail.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.schema import check as schema_check

MODES = ("warn", "strict", "off")
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
    found = checker(kind, name, message, platform=device.platform, os_version=device.os_version,
                    enrollment=device.enrollment, channel=device.channel)
    return [{"path": p.path, "code": p.code, "message": p.message} for p in found
            if getattr(p, "severity", "error") == "error"]


def summary_of(found: list[dict]) -> str:
    first = found[0]
    where = f"{first['path']}: " if first["path"] else ""
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{len(found)} schema problem(s): {where}{first['message']}{more}"
