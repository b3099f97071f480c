"""lab/plists.py: untrusted property lists are checked before they expand (ROBUSTNESS.md F3)."""
from __future__ import annotations

import datetime as dt
import plistlib

import pytest

from lab import plists


def _s(text: str) -> bytes:
    raw = text.encode()
    return (bytes([0x50 | len(raw)]) if len(raw) < 15 else b"\x5f\x10" + bytes([len(raw)])) + raw


def binary(objects: list[bytes], top: int = 0, ref_size: int = 1) -> bytes:
    """A binary plist from raw objects (1-byte offsets and references), as an attacker writes one."""
    out, offsets = b"bplist00", []
    for obj in objects:
        offsets.append(len(out))
        out += obj
    table = len(out)
    assert max(offsets) < 256
    out += bytes(offsets)
    return out + b"\0" * 6 + bytes([1, ref_size]) + len(objects).to_bytes(8, "big") + top.to_bytes(8, "big") \
        + table.to_bytes(8, "big")


def bomb(depth: int) -> bytes:
    """ROBUSTNESS.md F3: {"Status": "Acknowledged", "X": a0} where a_i = [a_{i+1}, a_{i+1}]: 2^depth leaves."""
    objects = [bytes([0xD2, 1, 2, 3, 4]), _s("Status"), _s("X"), _s("Acknowledged")]
    objects += [bytes([0xA2, 5 + i, 5 + i]) for i in range(depth)] + [b"\x09"]
    return binary(objects)


def test_ordinary_plists_of_both_formats_load_unchanged():
    value = {"MessageType": "TokenUpdate", "Token": b"\x01" * 32, "N": 7, "F": 1.5, "B": True,
             "D": dt.datetime(2026, 1, 2, 3, 4, 5), "L": [{"a": ["b", {"c": "d"}]}] * 3, "Empty": {}}
    for fmt in (plistlib.FMT_XML, plistlib.FMT_BINARY):
        assert plists.loads(plistlib.dumps(value, fmt=fmt)) == value


def test_shared_objects_that_stay_small_are_fine():
    assert plists.loads(bomb(8))["X"][0][0][0][0][0][0][0][0] is True  # 256 leaves: far below the limits


def test_a_reference_bomb_is_refused_before_it_expands():
    body = bomb(19)
    assert len(body) < 300
    with pytest.raises(plists.PlistRefused) as refused:
        plists.loads(body)
    assert refused.value.code == "plist-too-large" and "refer to the same objects" in refused.value.message


def test_depth_is_bounded_in_binary_and_xml():
    deep: object = "leaf"
    for _ in range(40):
        deep = [deep]
    for fmt in (plistlib.FMT_XML, plistlib.FMT_BINARY):
        with pytest.raises(plists.PlistRefused) as refused:
            plists.loads(plistlib.dumps({"X": deep}, fmt=fmt))
        assert refused.value.code == "plist-too-deep"
    assert plists.loads(plistlib.dumps({"X": deep}), plists.Limits(depth=50))["X"]


def test_node_and_byte_counts_are_bounded_in_xml_too():
    with pytest.raises(plists.PlistRefused, match="more than 10 objects"):
        plists.loads(plistlib.dumps(list(range(20))), plists.Limits(nodes=10))
    with pytest.raises(plists.PlistRefused, match="more than 100 bytes"):
        plists.loads(plistlib.dumps({"a": "x" * 200}), plists.Limits(size=100))


@pytest.mark.parametrize("objects, top, why", [
    ([bytes([0xA1, 0])], 0, "cycle"),  # an array that contains itself
    ([bytes([0xA1, 1]), bytes([0xA1, 0])], 0, "cycle"),  # two arrays that contain each other
    ([bytes([0xA1, 7])], 0, "past the object table"),
    ([bytes([0xA5, 0])], 0, "runs past"),
    ([_s("a")], 3, "trailer"),
])
def test_broken_object_tables_are_refused_with_the_reason(objects, top, why):
    with pytest.raises(plists.PlistRefused, match=why) as refused:
        plists.loads(binary(objects, top))
    assert refused.value.code == "bad-binary-plist"


def test_a_dictionary_is_required_where_a_message_is_expected():
    with pytest.raises(plists.PlistRefused) as refused:
        plists.load_dict(plistlib.dumps(["not", "a", "message"]))
    assert refused.value.code == "not-a-dictionary"
    with pytest.raises(plists.PlistRefused) as refused:
        plists.load_dict(b"<html>")
    assert refused.value.code == "not-a-plist"
