"""The lab CA as a download: PEM, and a configuration profile (.mobileconfig) that a real iPhone, iPad or Mac installs.

The profile holds one ``com.apple.security.root`` payload with the CA in DER. It is left unsigned: the only
certificate that could sign it chains to this very CA, which the device does not trust yet, so a signature would
still show "Not Verified". Its identifiers derive from the CA's fingerprint, so downloading it again yields the
same profile, and a new CA (``mdmlab up --fresh`` or another zone) a new one.
"""
from __future__ import annotations

import plistlib
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

CONTENT_TYPE = "application/x-apple-aspen-config"
PROFILE_IDENTIFIER = "test.lab.mdmlab.ca"
_NAMESPACE = uuid.UUID("6f1c6f3e-5d0b-4e8a-9a47-6d646d6c6162")


def mobileconfig(cert: x509.Certificate, suffixes: list[str]) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    zones = ", ".join(suffixes)
    payload = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{PROFILE_IDENTIFIER}.root.{fingerprint[:16]}",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, "root:" + fingerprint)).upper(),
        "PayloadDisplayName": "mdmlab lab CA",
        "PayloadDescription": f"mdmlab's test CA, name-constrained to {zones} and loopback.",
        "PayloadCertificateFileName": "mdmlab-ca.cer",
        "PayloadContent": der,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": PROFILE_IDENTIFIER,
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, "profile:" + fingerprint)).upper(),
        "PayloadDisplayName": f"mdmlab CA (lab zones only: {zones})",
        "PayloadDescription": (
            f"Installs the certificate authority of mdmlab, a test lab for Apple's account-driven enrollment. "
            f"Its name constraints limit it to {zones} and loopback addresses: it cannot vouch for any other "
            f"site. After installing, turn on full trust in Settings > General > About > Certificate Trust "
            f"Settings. Remove the profile when you are done with the lab. SHA-256 fingerprint: {fingerprint}."),
        "PayloadOrganization": "mdmlab",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
