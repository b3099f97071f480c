"""The device side's own storage: simulated devices that outlive one command, in SQLite under <state-dir>/devices/.

Never the MDM's store: this is what the devices keep. A device's plain record (model, enrollment facts, apps,
profiles, personal data) is JSON; the data-separated volume is kept as it is on a device, keys apart from the
sealed items. Removing the keys at unenrollment really erases them: ``secure_delete`` overwrites freed pages and
the write-ahead log is checkpointed and truncated, so the database files no longer hold the key bytes.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from lab.config import state_dir_flag
from lab.device.authentication import Credentials
from lab.device.device import Device, Enrollment, Network
from lab.device.separation import App, Profile, Sealed, Vault
from lab.store import Store

DIRECTORY = "devices"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_keys (
    device_id TEXT NOT NULL REFERENCES devices(device_id), enrollment_id TEXT NOT NULL, content TEXT NOT NULL,
    key BLOB NOT NULL, PRIMARY KEY (device_id, content)
);
CREATE TABLE IF NOT EXISTS volume_items (
    device_id TEXT NOT NULL REFERENCES devices(device_id), enrollment_id TEXT NOT NULL, content TEXT NOT NULL,
    item_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, PRIMARY KEY (device_id, content, item_id)
);
CREATE TABLE IF NOT EXISTS backups (
    backup_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, created REAL NOT NULL, data TEXT NOT NULL
)
"""


class UnknownDevice(LookupError):
    pass


class DeviceStore:
    def __init__(self, state_dir: Path):
        self.state_dir, self.path = Path(state_dir), self.location(state_dir)
        self.store = Store(self.path, _SCHEMA)
        self.store.query("PRAGMA secure_delete = ON")

    @staticmethod
    def location(state_dir: Path | str) -> Path:
        return Path(state_dir) / DIRECTORY / "devices.db"

    @classmethod
    def saved(cls, state_dir: Path | str) -> bool:
        """Whether any device was ever saved in ``state_dir`` (asked without creating the store)."""
        return cls.location(state_dir).is_file()

    @classmethod
    def elsewhere(cls, state_dir: Path | str, https_port: int) -> list[tuple[str, int]]:
        """(device id, port) of the enrolled devices whose ServerURL is on another HTTPS port than ``https_port``."""
        if not cls.saved(state_dir):
            return []
        store = cls(Path(state_dir))
        try:
            rows = store.store.query("SELECT device_id, record FROM devices ORDER BY created")
        finally:
            store.close()
        out = []
        for row in rows:
            port = server_port(json.loads(row["record"]).get("enrollment"))
            if port is not None and port != https_port:
                out.append((row["device_id"], port))
        return out

    # -- devices -------------------------------------------------------------------------------------------------
    def save(self, device: Device) -> str:
        record, vault, now = _record(device), device.contents.vault, time.time()
        with self.store.transaction() as db:
            db.execute("INSERT INTO devices VALUES (?,?,?,?) ON CONFLICT(device_id) DO UPDATE SET"
                       " record = excluded.record, updated = excluded.updated",
                       (device.device_id, json.dumps(record), now, now))
            db.execute("DELETE FROM volume_keys WHERE device_id = ?", (device.device_id,))
            db.execute("DELETE FROM volume_items WHERE device_id = ?", (device.device_id,))
            if vault is not None:
                db.executemany("INSERT INTO volume_keys VALUES (?,?,?,?)", [
                    (device.device_id, vault.enrollment_id, content, key) for content, key in vault.keys.items()])
                db.executemany("INSERT INTO volume_items VALUES (?,?,?,?,?,?)", [
                    (device.device_id, vault.enrollment_id, s.content, s.item_id, s.nonce, s.ciphertext)
                    for s in vault.items.values()])
        self.store.query("PRAGMA wal_checkpoint(TRUNCATE)")
        return device.device_id

    def resolve(self, device_id: str) -> str:
        """A device id as given on the command line: exact, or an unambiguous prefix (any case)."""
        wanted = device_id.strip().upper()
        ids = [r["device_id"] for r in self.store.query("SELECT device_id FROM devices")]
        if wanted in ids:
            return wanted
        matches = [i for i in ids if i.startswith(wanted)]
        if len(matches) != 1:
            known = ", ".join(sorted(ids)) or (f"none saved yet (enroll one with 'mdmlab enroll IDENTIFIER"
                                                f"{state_dir_flag(self.state_dir)}')")
            raise UnknownDevice(f"no single device matches {device_id!r}; devices: {known}")
        return matches[0]

    def load(self, device_id: str, network: Network) -> Device:
        device_id = self.resolve(device_id)
        row = self.store.one("SELECT record FROM devices WHERE device_id = ?", (device_id,))
        assert row is not None  # resolve() found it
        record = json.loads(row["record"])
        keys = {r["content"]: r["key"] for r in self.store.query(
            "SELECT content, key FROM volume_keys WHERE device_id = ?", (device_id,))}
        items = {(r["content"], r["item_id"]): Sealed(r["content"], r["item_id"], r["nonce"], r["ciphertext"])
                 for r in self.store.query("SELECT * FROM volume_items WHERE device_id = ?", (device_id,))}
        return _device(record, network, keys, items)

    def listing(self) -> list[dict]:
        out = []
        for row in self.store.query("SELECT device_id, record, updated FROM devices ORDER BY created"):
            record = json.loads(row["record"])
            enrollment = record.get("enrollment")
            out.append({"device_id": row["device_id"], "model_family": record["model_family"],
                        "os_version": record["os_version"], "updated": row["updated"],
                        "enrolled_as": enrollment["identifier"] if enrollment else None,
                        "mode": enrollment["mode"] if enrollment else None,
                        "enrollment_id": enrollment["enrollment_id"] if enrollment else None})
        return out

    def raw_volume(self, device_id: str) -> dict:
        """What the database holds of a device's volume: keys and sealed items (for tests and 'show --raw')."""
        return {"keys": [dict(r) for r in self.store.query(
                    "SELECT enrollment_id, content, key FROM volume_keys WHERE device_id = ?", (device_id,))],
                "items": [dict(r) for r in self.store.query(
                    "SELECT enrollment_id, content, item_id, nonce, ciphertext FROM volume_items WHERE device_id = ?",
                    (device_id,))]}

    # -- backups -------------------------------------------------------------------------------------------------
    def save_backup(self, device: Device) -> str:
        backup_id = f"{device.device_id}-{secrets.token_hex(3).upper()}"
        with self.store.transaction() as db:
            db.execute("INSERT INTO backups VALUES (?,?,?,?)", (backup_id, device.device_id, time.time(),
                                                                json.dumps(device.backup())))
        return backup_id

    def backup(self, backup_id: str) -> dict:
        row = self.store.one("SELECT data FROM backups WHERE backup_id = ? COLLATE NOCASE", (backup_id.strip(),))
        if row is None:
            known = ", ".join(r["backup_id"] for r in self.store.query("SELECT backup_id FROM backups")) or "none"
            raise UnknownDevice(f"no backup {backup_id!r}; backups: {known}")
        return json.loads(row["data"])

    def backups(self, device_id: str | None = None) -> list[dict]:
        sql = "SELECT backup_id, device_id, created FROM backups"
        rows = self.store.query(sql + (" WHERE device_id = ?" if device_id else "") + " ORDER BY created",
                                (device_id,) if device_id else ())
        return [dict(r) for r in rows]

    def close(self) -> None:
        self.store.close()


def server_port(enrollment: dict | None) -> int | None:
    """The HTTPS port of an enrollment's ServerURL (None when not enrolled)."""
    if not enrollment or not enrollment.get("server_url"):
        return None
    parsed = urlsplit(enrollment["server_url"])
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _record(device: Device) -> dict:
    contents, vault = device.contents, device.contents.vault
    return {
        "model_family": device.model_family, "os_version": device.os_version, "strict": device.strict,
        "serial": device.serial, "udid": device.udid, "language": device.language, "pkce": device.pkce,
        "owner_name": device.owner_name, "locked": device.locked, "history": device.history,
        "managed_by": device.managed_by,
        "enrollment": device.enrollment.to_dict() if device.enrollment else None,
        "contents": {"personal_account": contents.personal_account, "personal": contents.personal,
                     "apps": [a.to_dict() for a in contents.apps.values()],
                     "profiles": [p.to_dict() for p in contents.profiles.values()],
                     "shredded": contents.shredded,
                     "volume": None if vault is None else {"enrollment_id": vault.enrollment_id,
                                                           "classes": list(vault.classes), "created": vault.created}},
    }


def _device(record: dict, network: Network, keys: dict, items: dict) -> Device:
    c = record["contents"]
    device = Device(network, model_family=record["model_family"], os_version=record["os_version"],
                    strict=record["strict"], serial=record["serial"], udid=record["udid"],
                    language=record["language"], pkce=record["pkce"], owner_name=record["owner_name"],
                    locked=record["locked"], history=record["history"], managed_by=record.get("managed_by"),
                    personal_account=c["personal_account"], personal_apps=())
    contents = device.contents
    contents.personal = c["personal"]
    contents.apps = {a["bundle_id"]: App(**a) for a in c["apps"]}
    contents.profiles = {p["identifier"]: Profile(p["identifier"], p["uuid"], p["display_name"], p["kind"],
                                                  tuple(p["payload_types"]), p.get("organization", ""))
                         for p in c["profiles"]}
    contents.shredded = c["shredded"]
    volume = c["volume"]
    if volume is not None:
        contents.vault = Vault(volume["enrollment_id"], keys, items, tuple(volume["classes"]), volume["created"])
    if record["enrollment"] is not None:
        device.enrollment = Enrollment(**record["enrollment"])
        stored = contents.keychain_get("credentials")
        if stored is not None:
            device.enrollment.credentials = Credentials(**json.loads(stored))
    return device
