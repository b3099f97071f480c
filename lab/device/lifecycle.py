"""The end of an enrollment and the device's own life: the person signs out, the MDM removes the profile, erase
(no CheckOut), backup (personal data only) and restore (the enrollment does not come back)."""
from __future__ import annotations

import time

from lab.device import channel
from lab.device.trace import OK, DeviceFailure, Trace


def unenroll(device) -> Trace:
    trace = Trace()
    try:
        if device.enrollment is None:
            raise DeviceFailure("unenrollment", "not-enrolled", "this device is not enrolled")
        remove_enrollment(device, trace, by="the person (signed out of the work account)")
        trace.succeed("signed out of the work account; the enrollment and its data are gone", outcome="unenrolled")
    except DeviceFailure as failure:
        trace.fail(failure)
    return trace


def remove_enrollment(device, trace: Trace, *, by: str, check_out: bool = True) -> None:
    enrollment = device.enrollment
    check_out_message = channel.fit(device, "checkin", "CheckOut",
                                    {"MessageType": "CheckOut", **channel.identity_keys(device)})
    token = enrollment.access_token  # lives in the managed keychain, about to be destroyed
    removed = device.contents.remove_enrollment(enrollment.identifier)
    trace.add("unenrollment", "destroy the enrollment's keys", OK,
              f"{removed['shredded_items']} item(s) on the data-separated volume can never be read again")
    trace.add("unenrollment", "remove what the enrollment brought", OK,
              f"managed apps {', '.join(removed['managed_apps']) or 'none'}; profiles "
              f"{', '.join(removed['profiles']) or 'none'}; {removed['shared_work_items']} work item(s) from the "
              "shared store")
    device.locked = False
    device.enrollment = None
    if check_out and enrollment.check_out_when_removed:
        channel.check_out(device, enrollment.checkin_url, check_out_message, token, trace)
    device.history.append({"at": time.time(), "event": f"unenrolled by {by}"})


def erase(device, trace: Trace | None = None) -> None:
    device.contents.erase()
    device.enrollment, device.locked = None, False
    device.history.append({"at": time.time(), "event": "erased (all content and settings)"})
    if trace is not None:
        trace.add("unenrollment", "erase all content and settings", OK, "the enrollment keys and every "
                  "personal and managed item are gone")


def backup(device) -> dict:
    snapshot = {"device": device.serial, "model_family": device.model_family, **device.contents.backup()}
    device.history.append({"at": time.time(), "event": "backed up (personal data only)"})
    return snapshot


def restore(device, backup: dict) -> None:
    was = device.enrollment.identifier if device.enrollment else None
    device.contents.restore(backup)
    device.enrollment, device.locked = None, False
    device.history.append({"at": time.time(), "event": f"restored from the backup of {backup.get('device')}"
                           + (f"; the enrollment of {was} was not restored" if was else "")})
