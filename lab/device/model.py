"""What a device is before it talks to anyone: its model family, OS version and the facts that follow from them,
and the record of an enrollment.

``Client`` is the frozen description the stage functions read (discovery, sign-in, Enrollment SSO, commands): the
simulated device builds one from its model and OS, and so does ``mdmlab probe``, so neither fakes the other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from lab.device.authentication import Credentials
from lab.net import DEFAULT_APPLE_HOST

FAMILIES = {  # CLI name → (model-family query value, PRODUCT, OS name)
    "iPhone": ("iPhone", "iPhone17,2", "iOS"),
    "iPad": ("iPad", "iPad16,3", "iPadOS"),
    "Mac": ("Mac", "Mac15,12", "macOS"),
    "Vision": ("RealityDevice", "RealityDevice14,1", "visionOS"),
}
ADUE_MINIMUM = {"iPhone": (15, 0), "iPad": (15, 0), "Mac": (14, 0), "Vision": (1, 1)}
ADDE_MINIMUM = {"iPhone": (17, 0), "iPad": (17, 0), "Mac": (14, 0), "Vision": (1, 1)}
ABM_FALLBACK_MINIMUM = {"iPhone": (18, 2), "iPad": (18, 2), "Mac": (15, 2), "Vision": (2, 2)}
DEFAULT_OS = {"iPhone": "26.1", "iPad": "26.1", "Mac": "26.1", "Vision": "26.1"}
VERSIONS = {"mdm-byod": "account-driven User Enrollment", "mdm-adde": "account-driven Device Enrollment"}
ENROLL_TYPE, FORM_TYPE = "application/pkcs7-signature", "application/x-www-form-urlencoded"
_BUILD_PREFIX = {"iOS": 4, "iPadOS": 4, "macOS": 9, "visionOS": 20}


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"OS version {text!r} is not of the form X.Y")
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    return major, minor


@dataclass(frozen=True)
class Client:
    """The device as the servers see it: model, OS, user agents, timeouts and how strictly it judges answers."""
    model_family: str = "iPhone"  # the CLI's name (FAMILIES)
    os_version: str = ""
    strict: bool = False
    pkce: bool = False  # send PKCE in the OAuth 2 authorization request (the observed iOS client does not)
    discovery_timeout: float = 90.0
    apple_host: str = DEFAULT_APPLE_HOST
    language: str = "en-US"
    user_agent_discovery: str = "RemoteManagementAgent/1.0"
    user_agent_enroll: str = "DeviceManagementClient/1.0"
    user_agent_web: str = "Mozilla/5.0 (ASWebAuthenticationSession; mdmlab)"
    user_agent_mdm: str = "MDM/1.0"

    def __post_init__(self):
        if self.model_family not in FAMILIES:
            raise ValueError(f"model family {self.model_family!r} is not one of {', '.join(FAMILIES)}")
        object.__setattr__(self, "os_version", self.os_version or DEFAULT_OS[self.model_family])
        parse_version(self.os_version)

    @property
    def version(self) -> tuple[int, int]:
        return parse_version(self.os_version)

    @property
    def model_family_param(self) -> str:
        return FAMILIES[self.model_family][0]

    @property
    def product(self) -> str:
        return FAMILIES[self.model_family][1]

    @property
    def os_name(self) -> str:
        return FAMILIES[self.model_family][2]

    @property
    def build(self) -> str:
        major, minor = self.version
        number = major + _BUILD_PREFIX[self.os_name] if major < 26 else major - 3
        return f"{number}{chr(ord('A') + minor)}{100 + minor}"

    @property
    def has_abm_fallback(self) -> bool:
        return self.version >= ABM_FALLBACK_MINIMUM[self.model_family]

    @property
    def has_entry_point(self) -> bool:
        """Settings offers "Sign in to work or school account" (account-driven enrollment) on this OS version."""
        return self.version >= min(ADUE_MINIMUM[self.model_family], ADDE_MINIMUM[self.model_family])

    @property
    def enroll_content_type(self) -> str:
        """iOS/iPadOS 15 label the signed enrollment request as a form; later versions as what it is (CMS)."""
        if self.os_name in ("iOS", "iPadOS") and self.version[0] == 15:
            return FORM_TYPE
        return ENROLL_TYPE

    def unsupported_version_reason(self, version: str) -> str | None:
        minimum = (ADUE_MINIMUM if version == "mdm-byod" else ADDE_MINIMUM)[self.model_family]
        if self.version < minimum:
            return (f"{VERSIONS[version]} needs {self.os_name} {minimum[0]}.{minimum[1]} or later; this device runs "
                    f"{self.os_version}. Update the device or offer another enrollment method")
        return None


@dataclass
class Enrollment:
    enrollment_id: str
    identifier: str
    mode: str
    server_url: str
    checkin_url: str
    topic: str
    identity_subject: str
    profile_identifier: str = ""
    organization: str = ""
    check_out_when_removed: bool = True
    enrollment_user_id: str | None = None
    enrolled_at: float = field(default_factory=time.time)
    mdm_payload: dict = field(default_factory=dict)  # the installed com.apple.mdm payload (a renewal is held to it)
    credentials: Credentials | None = None  # kept in the managed keychain, never in the plain record

    @property
    def access_token(self) -> str | None:
        return self.credentials.access_token if self.credentials else None

    @property
    def user_enrollment(self) -> bool:
        return self.mode == "BYOD"

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "credentials"}
