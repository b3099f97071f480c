"""lab.device.separation, contents and store: per-enrollment AES-GCM keys by OS version (the seed's table), what
unenrollment destroys, what a backup holds, restore, pre-installed apps, invitations, and the device store on disk."""
from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lab.device import Device, Network
from lab.device.contents import Contents
from lab.device.device import Enrollment
from lab.device.separation import (
    CALENDAR,
    CONTENT,
    KEYCHAIN,
    MANAGED_APPS,
    NOTES,
    REMINDERS,
    Unreadable,
    Vault,
    separated_classes,
)
from lab.device.store import DeviceStore, UnknownDevice
from lab.pki import CertificateAuthority

MAA = "eliza@betterbag.test"


@pytest.mark.parametrize("os_name, version, missing", [
    ("iOS", (15, 7), {CALENDAR, REMINDERS}), ("iOS", (16, 0), {REMINDERS}), ("iOS", (17, 0), set()),
    ("iPadOS", (16, 0), {CALENDAR, REMINDERS}), ("iPadOS", (16, 1), {REMINDERS}), ("macOS", (14, 0), set()),
    ("visionOS", (1, 1), set()),
])
def test_which_content_is_separated_follows_the_seed_table(os_name, version, missing):
    assert set(CONTENT) - set(separated_classes(os_name, version)) == missing


def test_each_class_has_its_own_aes_256_key_and_items_are_bound_to_their_place():
    vault = Vault.create("E1", list(CONTENT))
    assert {len(k) for k in vault.keys.values()} == {32} and len(set(vault.keys.values())) == len(CONTENT)
    vault.seal(NOTES, "n1", b"work note")
    sealed = vault.items[(NOTES, "n1")]
    assert b"work note" not in sealed.ciphertext and vault.open(NOTES, "n1") == b"work note"
    moved = type(sealed)(NOTES, "n2", sealed.nonce, sealed.ciphertext)
    with pytest.raises(Unreadable):
        vault.open_sealed(moved)  # the item id is associated data: a blob cannot be moved
    with pytest.raises(InvalidTag):
        AESGCM(vault.keys[MANAGED_APPS]).decrypt(sealed.nonce, sealed.ciphertext, b"E1/notes/n1")


def test_destroying_the_keys_makes_the_managed_data_unreadable():
    vault = Vault.create("E1", [NOTES, KEYCHAIN])
    vault.seal(NOTES, "n1", b"work note")
    left = vault.destroy()
    assert not vault.readable and vault.keys == {} and vault.items == {}
    with pytest.raises(Unreadable, match="destroyed"):
        vault.open_sealed(left[0])
    with pytest.raises(Unreadable):
        vault.seal(NOTES, "n2", b"too late")


def contents(os_name="iOS", version=(15, 7)) -> Contents:
    c = Contents.new(os_name, version, "robin@personal.example", ("test.mdmlab.chat",))
    c.create_volume("E1")
    c.add_work_account("BetterBag", MAA)
    c.install_managed_app("test.mdmlab.work-notes", "Work Notes", 1_660_000_002)
    return c


def test_work_data_the_os_does_not_separate_sits_in_the_shared_store():
    c = contents("iOS", (15, 7))
    assert set(c.vault.keys) == {MANAGED_APPS, KEYCHAIN, "mail", NOTES}
    shared = {item["id"] for items in c.personal.values() for item in items if item.get("managed")}
    assert shared == {"work-calendar", "work-reminders"}
    described = {row["content"]: row for row in c.describe()["separation"]}
    assert described[CALENDAR]["separated"] is False and described[CALENDAR]["since"] == "iOS 16.0"
    assert described[CALENDAR]["store"] == "shared store" and described[CALENDAR]["work_items"] == 1
    assert described[NOTES]["store"].startswith("data-separated volume")


def test_unenrollment_removes_managed_apps_profiles_work_data_and_keeps_the_persons():
    c = contents("iOS", (15, 7))
    personal_before = {k: [i for i in v if not i.get("managed")] for k, v in c.personal.items()}
    removed = c.remove_enrollment(MAA)
    assert removed["managed_apps"] == ["test.mdmlab.work-notes"] and removed["shared_work_items"] == 2
    assert removed["shredded_items"] == 3 and c.vault is None  # work mail, notes, the app container
    assert set(c.apps) == {"test.mdmlab.chat"}
    assert c.personal == personal_before
    assert c.shredded[0]["enrollment_id"] == "E1"


def test_backup_holds_the_persons_data_only_and_restore_brings_no_enrollment():
    c = contents("iOS", (17, 0))
    backup = c.backup()
    text = repr(backup)
    assert "BetterBag" not in text and "work-notes" not in text and "E1" not in text
    assert [a["bundle_id"] for a in backup["apps"]] == ["test.mdmlab.chat"]
    c.restore(backup)
    assert c.vault is None and set(c.apps) == {"test.mdmlab.chat"}
    assert c.personal["notes"][0]["text"] == "Holiday packing list"


def test_a_personal_apple_account_cannot_accept_a_managed_app_invitation():
    c = contents()
    ok, why = c.accept_invitation("robin@personal.example", MAA)
    assert not ok and "personal Apple Account" in why
    assert c.accept_invitation(MAA, MAA)[0]
    assert not c.accept_invitation(MAA, None)[0]  # not enrolled: no Managed Apple Account on the device


# -- the device store -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


def enrolled_device(ca) -> Device:
    device = Device(Network("127.0.0.1", 1, str(ca.cert_path)), os_version="16.4")
    device.enrollment = Enrollment("E1", MAA, "BYOD", "https://mdm.lab.test/s", "https://mdm.lab.test/c",
                                   "com.apple.mgmt.x", "CN=x", profile_identifier="p")
    device.contents.create_volume("E1")
    device.contents.add_work_account("BetterBag", MAA)
    from lab.device.authentication import Credentials
    device.set_credentials(Credentials("apple-oauth2", MAA, "ACCESS-TOKEN-0123456789", {"token-url": "x"},
                                        "REFRESH-TOKEN-0123456789", 1.0e9))
    return device


def test_a_saved_device_comes_back_whole(tmp_path, ca):
    store = DeviceStore(tmp_path)
    device = enrolled_device(ca)
    try:
        store.save(device)
        again = store.load(device.device_id.lower()[:6], device.network)
        assert again.describe() == device.describe()
        assert again.enrollment.credentials == device.enrollment.credentials
        assert again.contents.vault.open(NOTES, "work-notes") == b"BetterBag onboarding checklist"
        assert store.listing()[0]["enrollment_id"] == "E1"
        with pytest.raises(UnknownDevice):
            store.load("NOPE", device.network)
        again.close()
    finally:
        device.close()
        store.close()


def test_tokens_are_only_in_the_sealed_keychain_and_keys_leave_the_files_at_unenrollment(tmp_path, ca):
    store = DeviceStore(tmp_path)
    device = enrolled_device(ca)
    try:
        store.save(device)

        def files() -> bytes:
            return b"".join(p.read_bytes() for p in sorted((tmp_path / "devices").glob("devices.db*")))

        keys = list(device.contents.vault.keys.values())
        assert b"ACCESS-TOKEN-0123456789" not in files() and b"REFRESH-TOKEN" not in files()
        assert all(key in files() for key in keys)  # the test looks in the right place
        raw = store.raw_volume(device.device_id)
        sealed, raw_keys = raw["items"], raw["keys"]
        device.contents.remove_enrollment(MAA)
        device.enrollment = None
        store.save(device)
        assert store.raw_volume(device.device_id) == {"keys": [], "items": []}
        assert not any(key in files() for key in keys)  # secure_delete + checkpoint: the key bytes are gone
        assert device.contents.vault is None
        # the copied ciphertext opened only with the keys that are now gone from memory and disk
        by_content = {row["content"]: row["key"] for row in raw_keys}
        for item in sealed:
            aad = f"{item['enrollment_id']}/{item['content']}/{item['item_id']}".encode()
            assert AESGCM(by_content[item["content"]]).decrypt(item["nonce"], item["ciphertext"], aad)
            assert by_content[item["content"]] not in files()
    finally:
        device.close()
        store.close()


def test_backups_are_kept_by_id(tmp_path, ca):
    store = DeviceStore(tmp_path)
    device = enrolled_device(ca)
    try:
        store.save(device)
        backup_id = store.save_backup(device)
        assert store.backup(backup_id.lower())["device"] == device.serial
        assert [b["backup_id"] for b in store.backups(device.device_id)] == [backup_id]
        with pytest.raises(UnknownDevice):
            store.backup("missing")
    finally:
        device.close()
        store.close()
