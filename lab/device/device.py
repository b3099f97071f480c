"""The simulated device: a model, an OS version, and the stages of PROTOCOL.md walked strictly.

It knows only what a real device knows: the identifier typed by the user, the DNS server, the CA it trusts, and
its own contents. It never imports a mock and never reads their state. Besides enrolling (enrollment.py) it keeps
the enrollment going (stage 4, channel.py): check-ins and command polls carry the bearer token, a 401 with the
challenge makes it renew the token (signin.py) and retry; it runs the commands it may run, unenrolls (by the
person or by the MDM), and models data separation (PROTOCOL.md 5; lifecycle.py).
"""
from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab.device import channel, enrollment, lifecycle, renewal, signin
from lab.device.authentication import Credentials
from lab.device.commands import CommandContext, Facts, Outcome, execute
from lab.device.contents import Contents
from lab.device.http import DeviceHTTP
from lab.device.model import (  # noqa: F401
    ADDE_MINIMUM,
    ADUE_MINIMUM,
    DEFAULT_OS,
    FAMILIES,
    Client,
    Enrollment,
    parse_version,  # re-exported: lab.device.device names them
)
from lab.device.separation import DEFAULT_PERSONAL_APPS
from lab.device.trace import Trace
from lab.net import LabResolver, Network
from lab.pki import self_signed
from lab.protocol import BUNDLE_ID

PERSONAL_ACCOUNT = "robin@personal.example"


@dataclass
class Device:
    network: Network
    model_family: str = "iPhone"
    os_version: str = ""
    strict: bool = False
    serial: str = field(default_factory=lambda: "LAB" + secrets.token_hex(4).upper())
    language: str = "en-US"
    discovery_timeout: float = 90.0
    fallback_on: tuple[str, ...] = ("http", "transport", "content")
    udid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    enrollment: Enrollment | None = None
    personal_account: str | None = PERSONAL_ACCOUNT
    personal_apps: tuple[str, ...] = DEFAULT_PERSONAL_APPS
    pkce: bool = False  # send PKCE in the OAuth 2 authorization request (the observed iOS client does not)
    owner_name: str = "Robin"
    managed_by: str | None = None  # another MDM that already manages the device (no work-account option then)
    virtual_machine: bool = False  # a Mac virtual machine (Apple refuses Apple Account sign-in below macOS 15)
    supervised: bool = False
    locked: bool = False
    history: list[dict] = field(default_factory=list)
    contents: Contents = field(init=False)  # the device's own data, made with it

    def __post_init__(self):
        bad = next((a for a in self.personal_apps if not BUNDLE_ID.fullmatch(str(a))), None)
        if bad is not None:
            raise ValueError(f"{bad!r} is not an app's bundle identifier (reverse-DNS, e.g. com.example.chat)")
        self.client = Client(self.model_family, self.os_version, strict=self.strict, pkce=self.pkce,
                             discovery_timeout=self.discovery_timeout, apple_host=self.network.apple_host,
                             language=self.language)
        self.os_version = self.client.os_version
        self.resolver = LabResolver(self.network.dns_server, self.network.dns_port)
        # Only URLs the device builds itself (the well-known URL) are dialled on the lab's port for 443;
        # URLs the lab hands out must carry the right port themselves, as they would for a real phone.
        self.self_built = DeviceHTTP(self.resolver, self.network.ca_cert, {443: self.network.https_port})
        self.session = DeviceHTTP(self.resolver, self.network.ca_cert)
        self.trusted_roots = [x509.load_pem_x509_certificate(Path(self.network.ca_cert).read_bytes())]
        self.key = ec.generate_private_key(ec.SECP256R1())
        # Stands in for the device's built-in identity that signs the first enrollment request.
        self.builtin_identity = self_signed(f"{self.product} {self.serial} (mdmlab device)", self.key)
        self.password: str | None = None  # what the person types; in memory only, never stored
        self.contents = Contents.new(self.os_name, self.client.version, self.personal_account, self.personal_apps)

    # -- facts about the model -------------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.serial

    @property
    def name(self) -> str:
        return f"{self.model_family} of {self.owner_name}"

    @property
    def product(self) -> str:
        return self.client.product

    @property
    def os_name(self) -> str:
        return self.client.os_name

    @property
    def identity(self):
        """The MDM identity (key, certificate) from the enrollment profile, kept in the managed keychain."""
        pem = self.contents.keychain_get("mdm-identity")
        if pem is None:
            return None
        return (serialization.load_pem_private_key(pem, password=None), x509.load_pem_x509_certificate(pem))

    # -- what the person and the MDM do --------------------------------------------------------------------
    def enroll(self, identifier: str, password: str | None = None) -> Trace:
        """Walk stages 1 to 3 and the first check-ins; the trace says what happened and why."""
        return enrollment.enroll(self, identifier, password)

    def sync(self, password: str | None = None) -> Trace:
        """Stands in for an APNs push: poll ServerURL, run each command, report, until the queue is empty."""
        return channel.sync(self, password)

    def command_context(self) -> CommandContext:
        enrolled, identity = self.enrollment, self.identity
        assert enrolled is not None, "commands reach an enrolled device only"
        return CommandContext(self.contents, Facts(
            self.client, self.udid, self.serial, self.name, enrolled.mode, enrolled.identifier,
            enrolled.profile_identifier, identity[1] if identity else None, self.locked, enrolled.mdm_payload))

    def run_command(self, envelope: dict) -> Outcome:
        outcome = execute(self.command_context(), envelope)
        self.locked = self.locked or outcome.lock
        if outcome.renewal is not None:
            renewal.apply(self, outcome.renewal)
        return outcome

    def set_credentials(self, credentials: Credentials) -> None:
        signin.set_credentials(self, credentials)

    def unlock(self) -> None:
        self.locked = False

    def unenroll(self) -> Trace:
        """The person signs out of the work account (Settings > VPN & Device Management)."""
        return lifecycle.unenroll(self)

    def remove_enrollment(self, trace: Trace, *, by: str, check_out: bool = True) -> None:
        lifecycle.remove_enrollment(self, trace, by=by, check_out=check_out)

    def erase(self, trace: Trace | None = None) -> None:
        """Erase All Content and Settings: everything goes; the MDM is not told (no CheckOut)."""
        lifecycle.erase(self, trace)

    def backup(self) -> dict:
        return lifecycle.backup(self)

    def restore(self, backup: dict) -> None:
        """Restore a backup: the device is erased, the person's data comes back, the enrollment does not."""
        lifecycle.restore(self, backup)

    def accept_invitation(self, account: str) -> tuple[bool, str]:
        """Open a managed app distribution invitation signed in as ``account`` (personal or the MAA)."""
        maa = self.enrollment.identifier if self.enrollment else None
        return self.contents.accept_invitation(account, maa)

    # -- views ---------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        enrolled, auth = self.enrollment, None
        if enrolled and enrolled.credentials:
            c = enrolled.credentials
            auth = {"method": c.method, "expires_at": c.expires_at, "refresh_token": c.refresh_token is not None,
                    "sso_app": signin.sso_app(self)}
        return {"device_id": self.device_id, "model_family": self.model_family, "product": self.product,
                "os": f"{self.os_name} {self.os_version}", "serial": self.serial, "udid": self.udid,
                "personal_account": self.contents.personal_account, "locked": self.locked,
                "enrollment": None if enrolled is None else {**enrolled.to_dict(), "authentication": auth},
                **self.contents.describe(), "history": list(self.history)}

    def close(self) -> None:
        self.self_built.close()
        self.session.close()
