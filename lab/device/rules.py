"""Where each command exists and which enrollments may run it (Apple's schema, mdm/commands/*.yaml): the schema's
``supportedOS`` per platform, ``userenrollment: {mode: forbidden}``, ``supervised: true`` (an account-driven Device
Enrollment is unsupervised) and ``requiresdep``; then the schema facts of lab.schema for this OS version."""
from __future__ import annotations

from dataclasses import dataclass

from lab.device import messages

_ALL = ("iOS", "iPadOS", "macOS", "visionOS")
_MOBILE = ("iOS", "iPadOS")


@dataclass(frozen=True)
class Rule:
    """Where a command exists, and where an account-driven enrollment may not run it (Apple's schema)."""
    platforms: tuple[str, ...]
    forbidden_ue: tuple[str, ...] = ()  # userenrollment: forbidden
    supervised: tuple[str, ...] = ()  # supervised: true (account-driven enrollments are unsupervised)
    never_account_driven: bool = False  # requiresdep, Shared iPad only, or "does not work with ADDE"


RULES = {
    "DeviceInformation": Rule(_ALL),
    "SecurityInfo": Rule(_ALL),
    "CertificateList": Rule(_ALL),
    "ProfileList": Rule(_ALL),
    "InstallProfile": Rule(_ALL),
    "RemoveProfile": Rule(_ALL),
    "InstallApplication": Rule(_ALL),
    "ManagedApplicationList": Rule(_ALL),
    "RemoveApplication": Rule(_ALL, forbidden_ue=("macOS",)),
    "InstalledApplicationList": Rule(_ALL, forbidden_ue=("macOS",)),
    "DeviceLock": Rule(_ALL, forbidden_ue=("macOS",)),
    "EraseDevice": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL),
    "RestartDevice": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, supervised=_MOBILE),
    "ShutDownDevice": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, supervised=_MOBILE),
    "ClearPasscode": Rule(("iOS", "iPadOS", "visionOS"), forbidden_ue=_ALL),
    "Restrictions": Rule(("iOS", "iPadOS", "visionOS"), forbidden_ue=_ALL),
    "EnableLostMode": Rule(_MOBILE, forbidden_ue=_ALL, supervised=_MOBILE),
    "DeviceLocation": Rule(_MOBILE, forbidden_ue=_ALL, supervised=_MOBILE),
    "ScheduleOSUpdate": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, supervised=("iOS", "iPadOS", "macOS")),
    "ActivationLockBypassCode": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, supervised=_ALL),
    "UserList": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, supervised=("macOS",),
                     never_account_driven=True),  # iOS: Shared iPad only
    "DeviceConfigured": Rule(_ALL, forbidden_ue=_ALL, never_account_driven=True),  # requiresdep
    "InviteToProgram": Rule(("iOS", "iPadOS", "macOS"), forbidden_ue=_ALL, never_account_driven=True),
}
FORBIDDEN_UE = {os: sorted(rt for rt, r in RULES.items() if os in r.forbidden_ue) for os in _ALL}


def refusal(context, request_type: str) -> str | None:
    """Why this device's enrollment may not run ``request_type``, or None when it may."""
    rule, os_name = RULES.get(request_type), context.facts.client.os_name
    user_enrollment = context.facts.user_enrollment
    if rule is None or os_name not in rule.platforms:
        return f"{os_name} has no command {request_type}"
    if user_enrollment and os_name in rule.forbidden_ue:
        return f"User Enrollment forbids {request_type} on {os_name}"
    if rule.never_account_driven:
        return f"{request_type} needs Automated Device Enrollment or a Shared iPad, not account-driven enrollment"
    if os_name in rule.supervised:
        return f"{request_type} needs a supervised device; account-driven Device Enrollment is unsupervised"
    problem = messages.refusal("command", request_type, os_name, context.facts.client.os_version, context.facts.mode)
    return problem.message if problem else None
