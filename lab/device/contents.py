"""What is on the simulated device: the person's data and apps, profiles, and the enrollment's data-separated
volume, with what enrollment, unenrollment, erase, backup and restore do to them (the seed's list):

- all configurations and settings go when the enrollment profile is removed;
- managed apps always go at unenrollment;
- an app installed before enrollment cannot become managed;
- restoring a backup does not restore the enrollment;
- a personal Apple Account cannot accept an invitation for managed app distribution.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lab.device.separation import (
    APP_STORE,
    KEYCHAIN,
    MANAGED_APPS,
    PERSONAL_SEED,
    STORE_IDS,
    WORK_SEED,
    App,
    Profile,
    Unreadable,
    Vault,
    separated_classes,
    separation_table,
)


@dataclass
class Contents:
    os_name: str
    version: tuple[int, int]
    personal_account: str | None = None
    personal: dict[str, list[dict]] = field(default_factory=dict)  # content → items {id, text, account}
    apps: dict[str, App] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    vault: Vault | None = None
    shredded: list[dict] = field(default_factory=list)  # volumes destroyed at unenrollment (no keys left)

    @classmethod
    def new(cls, os_name: str, version: tuple[int, int], personal_account: str | None,
            personal_apps: tuple[str, ...]) -> Contents:
        contents = cls(os_name, version, personal_account)
        owner = personal_account or "this device"
        for content, text in PERSONAL_SEED.items():
            contents.personal.setdefault(content, []).append({"id": f"personal-{content}", "text": text,
                                                              "account": owner})
        for bundle in personal_apps:
            store_id = STORE_IDS.get(bundle)
            name = APP_STORE[store_id][1] if store_id else bundle.rsplit(".", 1)[-1].title()
            contents.apps[bundle] = App(bundle, name, False, store_id, source="person")
            contents.personal.setdefault("app-data", []).append({"id": bundle, "text": f"{name}: personal chats",
                                                                 "account": owner})
        return contents

    # -- the enrollment's volume ---------------------------------------------------------------------------------
    def create_volume(self, enrollment_id: str) -> Vault:
        """Stage 3.3 (or Enrollment SSO's consent): the data-separated volume with fresh keys."""
        if self.vault is None or not self.vault.readable:
            self.vault = Vault.create(enrollment_id, separated_classes(self.os_name, self.version))
        return self.vault

    def separated(self, content: str) -> bool:
        return self.vault is not None and content in self.vault.keys

    def put_work_item(self, content: str, item_id: str, text: str, account: str) -> str:
        """Work data: sealed when this OS separates the class, else in the shared store tagged with the account."""
        if self.separated(content):
            assert self.vault is not None  # separated() says there is one
            self.vault.seal(content, item_id, text.encode())
            return "sealed"
        self.personal.setdefault(content, []).append({"id": item_id, "text": text, "account": account,
                                                      "managed": True})
        return "shared"

    def add_work_account(self, organization: str, maa: str) -> None:
        """The Managed Apple Account signed in: its iCloud data arrives (mail, notes, calendar, reminders)."""
        for content, text in WORK_SEED.items():
            self.put_work_item(content, f"work-{content}", text.format(org=organization), maa)

    def keychain_put(self, item_id: str, data: bytes) -> None:
        assert self.vault is not None, "the managed keychain lives on the enrollment's volume"
        self.vault.seal(KEYCHAIN, item_id, data)

    def keychain_get(self, item_id: str) -> bytes | None:
        try:
            return self.vault.open(KEYCHAIN, item_id) if self.vault else None
        except Unreadable:
            return None

    # -- apps and profiles -------------------------------------------------------------------------------------
    def install_managed_app(self, bundle: str, name: str, store_id: int | None, source: str = "mdm") -> App:
        app = App(bundle, name, True, store_id, source=source, management_flags=1)
        self.apps[bundle] = app
        assert self.vault is not None, "managed apps install on an enrolled device, which has its volume"
        self.vault.seal(MANAGED_APPS, bundle, f"{name}: work documents".encode())
        return app

    def remove_app(self, bundle: str) -> None:
        app = self.apps.pop(bundle, None)
        if app is not None and app.managed and self.vault is not None:
            self.vault.remove(MANAGED_APPS, bundle)
        self.personal["app-data"] = [i for i in self.personal.get("app-data", []) if i["id"] != bundle]

    def managed_apps(self) -> list[App]:
        return [a for a in self.apps.values() if a.managed]

    def install_profile(self, profile: Profile) -> None:
        self.profiles[profile.identifier] = profile

    def accept_invitation(self, account: str, maa: str | None) -> tuple[bool, str]:
        """A managed app distribution (VPP) invitation opened on the device (the seed: personal accounts can't)."""
        if account != maa:
            return False, ("a personal Apple Account cannot accept an invitation for managed app distribution; "
                           "managed apps are licensed to the Managed Apple Account of the enrollment")
        return True, f"managed apps are assigned to {maa}"

    # -- unenrollment, erase, backup, restore ----------------------------------------------------------------
    def remove_enrollment(self, maa: str | None) -> dict:
        """Unenrollment (by the person or the MDM): keys destroyed first, then everything managed goes."""
        removed: dict[str, Any] = {"managed_apps": sorted(a.bundle_id for a in self.managed_apps()),
                   "profiles": sorted(p.identifier for p in self.profiles.values() if p.managed),
                   "shared_work_items": 0, "shredded_items": 0}
        if self.vault is not None:
            left = self.vault.destroy()
            removed["shredded_items"] = len(left)
            self.shredded.append({"enrollment_id": self.vault.enrollment_id, "destroyed": self.vault.destroyed,
                                  "classes": list(self.vault.classes), "items": len(left)})
            self.vault = None
        for bundle in removed["managed_apps"]:
            self.apps.pop(bundle, None)
        self.profiles = {k: p for k, p in self.profiles.items() if not p.managed}
        for content, items in self.personal.items():
            keep = [i for i in items if not i.get("managed")]
            removed["shared_work_items"] += len(items) - len(keep)
            self.personal[content] = keep
        return removed

    def erase(self) -> None:
        """Erase All Content and Settings: the person's data too; the enrollment keys are destroyed with it."""
        self.remove_enrollment(None)
        self.personal, self.apps, self.profiles = {}, {}, {}

    def backup(self) -> dict:
        """What a backup holds: the person's data, apps and profiles; never the enrollment or managed data."""
        return {"created": time.time(), "os": f"{self.os_name} {self.version[0]}.{self.version[1]}",
                "personal_account": self.personal_account,
                "personal": {c: [dict(i) for i in items if not i.get("managed")] for c, items in self.personal.items()},
                "apps": [a.to_dict() for a in self.apps.values() if not a.managed],
                "profiles": [p.to_dict() for p in self.profiles.values() if not p.managed]}

    def restore(self, backup: dict) -> None:
        self.erase()
        self.personal_account = backup.get("personal_account")
        self.personal = {c: [dict(i) for i in items] for c, items in backup["personal"].items()}
        self.apps = {a["bundle_id"]: App(**a) for a in backup["apps"]}
        self.profiles = {p["identifier"]: Profile(p["identifier"], p["uuid"], p["display_name"], p["kind"],
                                                  tuple(p["payload_types"]), p.get("organization", ""))
                         for p in backup["profiles"]}

    # -- views ---------------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        table = separation_table(self.os_name, self.version)
        for row in table:
            content = row["content"]
            if self.vault is not None and content in self.vault.classes:
                row["store"] = "data-separated volume (AES-256-GCM key of the enrollment)"
                row["work_items"] = len(self.vault.ids(content))
            else:
                row["store"] = "shared store" if not row["separated"] else "-"
                row["work_items"] = sum(1 for i in self.personal.get(content, []) if i.get("managed"))
            row["personal_items"] = sum(1 for i in self.personal.get(content, []) if not i.get("managed"))
        return {
            "volume": None if self.vault is None else {
                "enrollment_id": self.vault.enrollment_id, "readable": self.vault.readable,
                "keys": sorted(self.vault.keys), "items": len(self.vault.items)},
            "separation": table,
            "apps": [a.to_dict() for a in sorted(self.apps.values(), key=lambda a: a.bundle_id)],
            "profiles": [p.to_dict() for p in self.profiles.values()],
            "personal": {c: [i["text"] for i in items if not i.get("managed")] for c, items in self.personal.items()},
            "shredded": list(self.shredded),
        }
