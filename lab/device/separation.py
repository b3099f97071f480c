"""Data separation on the device (PROTOCOL.md 5, the seed's table): what an account-driven enrollment keeps apart
from the person's data, under which keys, and what unenrollment, backup and restore do to it.

At enrollment the device creates the data-separated volume: one AES-256-GCM key per content class that its OS
version separates. Managed data (managed apps' containers, the work account's mail, notes, ...) is sealed under
those keys, with the enrollment, class and item as associated data, so a blob cannot be moved between them.
Unenrollment destroys the keys first (crypto-shredding): whatever ciphertext is left can never be read again.
Content the OS version does not separate yet (Calendar before iOS 16, Reminders before iOS 17) lives in the shared
store, tagged with the work account, and is only deleted, not shredded.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MANAGED_APPS, KEYCHAIN, MAIL, NOTES, CALENDAR, REMINDERS = (
    "managed-apps", "keychain", "mail", "notes", "calendar", "reminders")
CONTENT = (MANAGED_APPS, KEYCHAIN, MAIL, NOTES, CALENDAR, REMINDERS)
LABELS = {MANAGED_APPS: "Managed app data containers", KEYCHAIN: "Keychain items", MAIL: "Mail",
          NOTES: "Notes", CALENDAR: "Calendar", REMINDERS: "Reminders"}

_BASE = {"iOS": (15, 0), "iPadOS": (15, 0), "macOS": (14, 0), "visionOS": (1, 1)}
# First OS version that separates each content class cryptographically (the seed's table; PROTOCOL.md 5).
SEPARATED_FROM = {
    MANAGED_APPS: _BASE, KEYCHAIN: _BASE, MAIL: _BASE, NOTES: _BASE,
    CALENDAR: {"iOS": (16, 0), "iPadOS": (16, 1), "macOS": (13, 0), "visionOS": (1, 1)},
    REMINDERS: {"iOS": (17, 0), "iPadOS": (17, 0), "macOS": (14, 0), "visionOS": (1, 1)},
}

# What the work account brings once its Managed Apple Account signs in (stage 3.3), and the person's own data.
WORK_SEED = {MAIL: "Welcome to {org}: your first week", NOTES: "{org} onboarding checklist",
             CALENDAR: "{org} team stand-up, Mondays 9:30", REMINDERS: "Submit travel expenses to {org}"}
PERSONAL_SEED = {MAIL: "Flight confirmation: Lisbon, 14 June", NOTES: "Holiday packing list",
                 CALENDAR: "Dentist, Thursday 8:00", REMINDERS: "Call grandma",
                 KEYCHAIN: "Home Wi-Fi password", "photos": "IMG_0001.HEIC (beach)"}


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def separated_classes(os_name: str, version: tuple[int, int]) -> list[str]:
    return [c for c in CONTENT if version >= SEPARATED_FROM[c][os_name]]


def separation_table(os_name: str, version: tuple[int, int]) -> list[dict]:
    """Each content class: separated on this OS version or not, and from which version."""
    return [{"content": c, "label": LABELS[c], "separated": version >= SEPARATED_FROM[c][os_name],
             "since": f"{os_name} {version_text(SEPARATED_FROM[c][os_name])}"} for c in CONTENT]


class Unreadable(Exception):
    """Managed data whose key is gone (unenrolled) or does not fit (tampered, moved)."""


@dataclass
class Sealed:
    content: str
    item_id: str
    nonce: bytes
    ciphertext: bytes  # with the GCM tag


@dataclass
class Vault:
    """The data-separated volume of one enrollment."""
    enrollment_id: str
    keys: dict[str, bytes] = field(default_factory=dict)  # content class → AES-256 key
    items: dict[tuple[str, str], Sealed] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    created: float = field(default_factory=time.time)
    destroyed: float | None = None

    @classmethod
    def create(cls, enrollment_id: str, classes: list[str]) -> Vault:
        return cls(enrollment_id, {c: AESGCM.generate_key(bit_length=256) for c in classes}, classes=tuple(classes))

    def _aad(self, content: str, item_id: str) -> bytes:
        return f"{self.enrollment_id}/{content}/{item_id}".encode()

    def seal(self, content: str, item_id: str, plaintext: bytes) -> None:
        if content not in self.keys:
            raise Unreadable(f"no key for {content}: the volume is destroyed or does not separate it")
        nonce = os.urandom(12)
        self.items[(content, item_id)] = Sealed(content, item_id, nonce, AESGCM(self.keys[content]).encrypt(
            nonce, plaintext, self._aad(content, item_id)))

    def open(self, content: str, item_id: str) -> bytes:
        sealed = self.items.get((content, item_id))
        if sealed is None:
            raise Unreadable(f"no {content} item {item_id}")
        return self.open_sealed(sealed)

    def open_sealed(self, sealed: Sealed) -> bytes:
        key = self.keys.get(sealed.content)
        if key is None:
            raise Unreadable(f"the {sealed.content} key of enrollment {self.enrollment_id} is destroyed")
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, self._aad(sealed.content, sealed.item_id))
        except InvalidTag:
            raise Unreadable(f"{sealed.content} item {sealed.item_id} does not decrypt with its key") from None

    def remove(self, content: str, item_id: str) -> None:
        self.items.pop((content, item_id), None)

    def ids(self, content: str) -> list[str]:
        return sorted(i for c, i in self.items if c == content)

    def destroy(self) -> list[Sealed]:
        """Crypto-shred: forget every key, then drop the items; returns the (now unreadable) ciphertexts."""
        self.keys.clear()
        self.destroyed = time.time()
        left, self.items = list(self.items.values()), {}
        return left

    @property
    def readable(self) -> bool:
        return bool(self.keys)


@dataclass
class App:
    bundle_id: str
    name: str
    managed: bool = False
    store_id: int | None = None
    version: str = "1.0"
    source: str = "person"  # person (App Store, personal account), mdm, esso
    management_flags: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Profile:
    identifier: str
    uuid: str
    display_name: str
    kind: str  # enrollment, mdm (installed by InstallProfile), esso, person
    payload_types: tuple[str, ...] = ()
    organization: str = ""

    @property
    def managed(self) -> bool:
        return self.kind != "person"

    def to_dict(self) -> dict:
        return {**vars(self), "payload_types": list(self.payload_types), "managed": self.managed}


# The lab's "App Store": iTunesStoreID → (bundle identifier, name). The device resolves InstallApplication and the
# Enrollment SSO document's iTunesStoreID here, as a device asks the real App Store.
APP_STORE = {
    1_660_000_001: ("test.mdmlab.enrollment-sso", "Lab Enrollment SSO"),
    1_660_000_002: ("test.mdmlab.work-notes", "Work Notes"),
    1_660_000_003: ("test.mdmlab.chat", "Chat"),
    1_660_000_004: ("test.mdmlab.expenses", "Expenses"),
}
STORE_IDS = {bundle: store_id for store_id, (bundle, _) in APP_STORE.items()}
DEFAULT_PERSONAL_APPS = ("test.mdmlab.chat",)  # installed by the person before enrollment
