"""CMS (PKCS#7) SignedData: signing with cryptography, parsing and verifying with asn1crypto.

cryptography can sign but not verify CMS, so verification is done here: the signature over the signed
attributes, the message digest of the content, and the signer's chain to a trusted root (one level, as the
lab issues every signer directly from a root).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                  "sha512": hashes.SHA512}


class CMSError(ValueError):
    """The bytes are not a usable CMS SignedData, or its signature does not hold."""


def sign(content: bytes, cert: x509.Certificate, key) -> bytes:
    """DER SignedData with the content attached. ``Binary`` keeps the bytes exactly (no CRLF rewriting)."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def looks_like_cms(body: bytes) -> bool:
    return body[:1] == b"\x30" and b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02" in body[:64]


@dataclass(frozen=True)
class SignedContent:
    content: bytes
    signer: x509.Certificate
    certificates: list[x509.Certificate]


_SIGNED_DATA = "1.2.840.113549.1.7.2"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"


def parse(der: bytes) -> SignedContent:
    """Extract content and signer, checking the signature and digest (not the chain)."""
    try:
        info = asn1_cms.ContentInfo.load(der)
        if info["content_type"].dotted != _SIGNED_DATA:
            raise CMSError(f"CMS content type is {info['content_type'].native}, not signed_data")
        signed = info["content"]
        content = signed["encap_content_info"]["content"].native
        if content is None:
            raise CMSError("CMS SignedData carries no content (detached signature)")
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"] or []]
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise CMSError(f"expected one signer, found {len(signer_infos)}")
        si = signer_infos[0]
    except CMSError:
        raise
    except Exception as exc:  # asn1crypto raises many types on garbage input
        raise CMSError(f"not a DER CMS SignedData: {exc.__class__.__name__}") from exc
    try:
        signer = _find_signer(si, certs)
        _verify_signer_info(si, signer, content)
    except CMSError:
        raise
    except Exception as exc:  # a corrupt signer key or algorithm surfaces as ValueError/UnsupportedAlgorithm
        raise CMSError(f"the CMS signer cannot be checked: {exc.__class__.__name__}: {exc}") from exc
    return SignedContent(content, signer, certs)


def _find_signer(si, certs: list[x509.Certificate]) -> x509.Certificate:
    sid = si["sid"]
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            if cert.serial_number == sid.chosen["serial_number"].native:
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == sid.chosen.native:
                return cert
    raise CMSError("the signer's certificate is not included in the CMS")


def _verify_signer_info(si, signer: x509.Certificate, content: bytes) -> None:
    algo = si["digest_algorithm"]["algorithm"].native
    if algo not in _HASHES:
        raise CMSError(f"unsupported digest algorithm {algo}")
    hash_cls = _HASHES[algo]
    signed_attrs = si["signed_attrs"]
    if isinstance(signed_attrs, asn1_core.Void):
        data = content
    else:
        digest = next((a["values"][0].native for a in signed_attrs if a["type"].dotted == _MESSAGE_DIGEST), None)
        if digest != hashlib.new(algo, content).digest():
            raise CMSError("message digest does not match the content (content altered after signing)")
        # The signature covers the attributes as a SET OF (RFC 5652 5.4): the received DER with its [0] IMPLICIT
        # tag byte replaced, which also avoids re-encoding (and deep-copying) the parsed attributes.
        data = b"\x31" + signed_attrs.dump()[1:]
    signature = si["signature"].native
    public_key = signer.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_cls()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        else:
            raise CMSError(f"unsupported signer key type {type(public_key).__name__}")
    except InvalidSignature as exc:
        raise CMSError("the CMS signature does not verify") from exc


def verify_chain(signer: x509.Certificate, roots: list[x509.Certificate]) -> x509.Certificate:
    """Return the root that issued ``signer`` and whose signature on it holds; raise otherwise."""
    for root in roots:
        if root.subject != signer.issuer:
            continue
        try:
            signer.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root
    raise CMSError(f"the signer '{signer.subject.rfc4514_string()}' is not issued by a trusted CA")
