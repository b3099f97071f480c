"""lab.cms: CMS SignedData signed with cryptography, parsed and verified with asn1crypto.

Whatever the bytes, parse() either returns the content the signer signed or raises CMSError: the MDM and the
device catch CMSError only, so any other exception would be a 500 or a crashed device.
"""
from __future__ import annotations

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from lab import cms
from lab.pki import CertificateAuthority

CONTENT = (b'<?xml version="1.0"?>\n<plist version="1.0">\n'
           b"<dict><key>PRODUCT</key><string>iPhone17,2</string></dict>\n</plist>\n")


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


@pytest.fixture(scope="module")
def signer(ca):
    return ca.issue_profile_signer("BetterBag")


@pytest.fixture(scope="module")
def signed(signer) -> bytes:
    return cms.sign(CONTENT, signer.cert, signer.key)


def flip(data: bytes, needle: bytes, offset: int = -1) -> bytes:
    """``data`` with one bit changed inside the (unique) occurrence of ``needle``."""
    assert data.count(needle) == 1
    at = data.index(needle) + (offset % len(needle))
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_round_trip_keeps_the_bytes_exactly(signed, signer):
    assert cms.looks_like_cms(signed)
    parsed = cms.parse(signed)
    assert parsed.content == CONTENT  # LF kept: no CRLF rewriting
    assert parsed.signer == signer.cert
    assert signer.cert in parsed.certificates


def test_round_trip_of_empty_and_binary_content(signer):
    for content in (b"\x00\x01\xff\r\n", b"x" * 70_000):
        assert cms.parse(cms.sign(content, signer.cert, signer.key)).content == content


def test_tampered_content_is_rejected(signed):
    with pytest.raises(cms.CMSError, match="digest"):
        cms.parse(flip(signed, b"iPhone17,2"))


def test_tampered_signature_is_rejected(signed):
    signature = asn1_cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signature"].native
    with pytest.raises(cms.CMSError, match="signature"):
        cms.parse(flip(signed, signature))


def test_tampered_signed_attribute_is_rejected(signed):
    """The signature covers the signed attributes (checked on their DER as received, re-tagged as a SET OF)."""
    attrs = asn1_cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signed_attrs"]
    signing_time = next(a for a in attrs if a["type"].native == "signing_time")["values"][0].dump()
    with pytest.raises(cms.CMSError, match="signature"):
        cms.parse(flip(signed, signing_time, offset=-2))


def test_content_signed_without_attributes_is_verified_on_the_content(signer):
    bare = pkcs7.PKCS7SignatureBuilder().set_data(CONTENT).add_signer(signer.cert, signer.key, hashes.SHA256()) \
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoAttributes])
    assert isinstance(asn1_cms.ContentInfo.load(bare)["content"]["signer_infos"][0]["signed_attrs"].native,
                      type(None))
    assert cms.parse(bare).content == CONTENT
    with pytest.raises(cms.CMSError, match="signature"):
        cms.parse(flip(bare, b"iPhone17,2"))


def test_swapped_signer_certificate_is_rejected(signer, ca, tmp_path):
    impostor = CertificateAuthority(tmp_path / "impostor", ["lab.test"]).issue_profile_signer("BetterBag")
    forged = cms.sign(CONTENT, impostor.cert, impostor.key)
    # swap the impostor's certificate for the real signer's: the signature no longer matches the key
    forged = forged.replace(impostor.cert.public_bytes(serialization.Encoding.DER),
                            signer.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(cms.CMSError):
        cms.parse(forged)


@pytest.mark.parametrize("garbage", [
    b"", b"garbage", b"\x30", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff" + b"\x00" * 40,
    bytes(range(256)), b"<plist><dict/></plist>",
], ids=["empty", "text", "lone-sequence", "integer-sequence", "overlong", "bytes", "plist"])
def test_garbage_is_rejected(garbage):
    with pytest.raises(cms.CMSError):
        cms.parse(garbage)


def test_truncations_are_rejected(signed):
    for length in range(len(signed)):
        with pytest.raises(cms.CMSError):
            cms.parse(signed[:length])


def test_other_content_types_are_rejected():
    data = asn1_cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    with pytest.raises(cms.CMSError, match="not signed_data"):
        cms.parse(data)


def test_detached_signature_is_rejected(signed):
    info = asn1_cms.ContentInfo.load(signed)
    info["content"]["encap_content_info"] = {"content_type": "data"}
    with pytest.raises(cms.CMSError, match="detached"):
        cms.parse(info.dump(force=True))


def test_missing_signer_certificate_is_rejected(signed):
    info = asn1_cms.ContentInfo.load(signed)
    info["content"]["certificates"] = []
    with pytest.raises(cms.CMSError, match="not included"):
        cms.parse(info.dump(force=True))


def test_corrupted_signer_key_is_a_cms_error(signed, signer):
    """A signer certificate whose public key cannot be loaded is bad CMS, not a crash."""
    point = signer.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
    with pytest.raises(cms.CMSError):
        cms.parse(flip(signed, point))  # the point leaves the curve


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # flipped serials
def test_every_single_bit_corruption_is_a_cms_error_or_harmless(signed):
    """Flip the low bit of each byte in turn: parse either raises CMSError or still yields the signed content."""
    escaped = {}
    for at in range(len(signed)):
        corrupted = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1:]
        try:
            assert cms.parse(corrupted).content == CONTENT
        except cms.CMSError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
            escaped.setdefault(type(exc).__name__, at)
    assert escaped == {}, f"exceptions other than CMSError (type: first offset): {escaped}"


def test_verify_chain_accepts_the_lab_root(signed, ca):
    assert cms.verify_chain(cms.parse(signed).signer, [ca.cert]) == ca.cert


def test_verify_chain_picks_the_issuer_among_several_roots(signed, ca, tmp_path):
    other = CertificateAuthority(tmp_path / "other", ["lab.test"])
    assert cms.verify_chain(cms.parse(signed).signer, [other.cert, ca.cert]) == ca.cert


def test_verify_chain_rejects_another_root_with_the_same_name(signed, ca, tmp_path):
    other = CertificateAuthority(tmp_path / "other", ["lab.test"])
    assert other.cert.subject == ca.cert.subject  # same name, different key: only the signature tells them apart
    with pytest.raises(cms.CMSError, match="not issued by a trusted CA"):
        cms.verify_chain(cms.parse(signed).signer, [other.cert])


def test_verify_chain_rejects_no_roots(signed):
    with pytest.raises(cms.CMSError):
        cms.verify_chain(cms.parse(signed).signer, [])
