"""The lab's certificate authority: a name-constrained root, per-host TLS leaves, a profile-signing cert.

A device that trusts this CA must not become interceptable outside the lab, so the root carries critical
NameConstraints limited to the lab's zone suffixes and loopback addresses: DNS names, and also email addresses
(an S/MIME certificate for another organization's mailbox) and URIs, each only in the lab's zones. The key never
leaves the state dir and is written with mode 0600.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
LEAF_DAYS = 365  # Apple rejects TLS server certificates valid for more than 825 days (398 for public roots)
CA_DAYS = 3650


SIGNING_ONLY = x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                             encipher_only=False, decipher_only=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmlab"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def self_signed(common_name: str, key: ec.EllipticCurvePrivateKey, days: int = 30) -> x509.Certificate:
    """A throwaway self-signed certificate, e.g. the stand-in for a device's built-in identity."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A private key the lab wrote (always EC); ValueError for anything else."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not the EC key the lab writes")
    return key


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path  # leaf followed by the root, as a TLS server sends it
    key_path: Path


class CertificateAuthority:
    """A root CA persisted under ``<state-dir>/pki``; reused across restarts while the zone is unchanged."""

    def __init__(self, directory: Path, suffixes: list[str], *, name: str = "mdmlab lab root CA"):
        self.directory = Path(directory)
        self.suffixes = sorted({s.lower().strip(".") for s in suffixes})
        self.name = name
        self.cert_path = self.directory / "ca.pem"
        self.key_path = self.directory / "ca.key"
        self.cert, self.key = self._load_or_create()

    # -- root ---------------------------------------------------------------------------------------------
    def _load_or_create(self):
        if self.cert_path.exists() and self.key_path.exists():
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if self._constrained_as_required(cert) and cert.not_valid_after_utc > _now():
                os.chmod(self.key_path, 0o600)
                return cert, key
        return self._create()

    def _permitted(self) -> list[x509.GeneralName]:
        """Each zone as a DNS name; mailboxes and URI hosts at the zone itself and below it (RFC 5280 4.2.1.10:
        "zone" is that host exactly, ".zone" any name under it); the loopback networks."""
        permitted: list[x509.GeneralName] = [x509.DNSName(s) for s in self.suffixes]
        for kind in (x509.RFC822Name, x509.UniformResourceIdentifier):
            permitted += [kind(form) for s in self.suffixes for form in (s, "." + s)]
        return permitted + [x509.IPAddress(net) for net in LOOPBACK_NETWORKS]

    def _constrained_as_required(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is constrained exactly as this lab's root must be (an older root, constrained for DNS
        names only, is replaced)."""
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        return set(nc.permitted_subtrees or []) == set(self._permitted()) and not nc.excluded_subtrees

    def _create(self):
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        permitted = self._permitted()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
                           critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, key_pem(key))
        self.cert_path.write_bytes(cert_pem(cert))
        for stale in (self.directory / "hosts").glob("*"):
            stale.unlink()
        return cert, key

    def permits(self, host: str) -> bool:
        host = host.lower().strip(".")
        return any(host == s or host.endswith("." + s) for s in self.suffixes)

    # -- leaves -------------------------------------------------------------------------------------------
    def _builder(self, subject: x509.Name, public_key, not_before, not_after):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def issue_server(self, host: str, *, names: list[str] | None = None, not_before: dt.datetime | None = None,
                     not_after: dt.datetime | None = None, tag: str = "", with_root: bool = True) -> Leaf:
        """A TLS server leaf for ``host`` (plus ``names``), written to ``pki/hosts/<host>[.<tag>].pem``.

        A plain leaf (default validity) that a previous start wrote for the same names under this CA, and that is
        valid for another month, is reused: a restart then costs no key generation and signing per host.
        """
        now = _now()
        sans: list[x509.GeneralName] = []
        for n in [host, *(names or [])]:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        hosts_dir = self.directory / "hosts"
        stem = f"{host}.{tag}" if tag else host
        cert_path, key_path = hosts_dir / f"{stem}.pem", hosts_dir / f"{stem}.key"
        if not_before is None and not_after is None and with_root:
            reused = self._reusable(cert_path, key_path, sans, now)
            if reused is not None:
                return reused
        key = ec.generate_private_key(ec.SECP256R1())
        # OpenSSL checks a host-like CN against the DNS name constraints when no DNS SAN is present
        common_name = host if not isinstance(sans[0], x509.IPAddress) else f"mdmlab {host}"
        cert = (
            self._builder(_name(common_name), key.public_key(), not_before or now - dt.timedelta(hours=1),
                          not_after or now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(SIGNING_ONLY, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert) + (cert_pem(self.cert) if with_root else b""))
        return Leaf(cert, key, cert_path, key_path)

    def _reusable(self, cert_path: Path, key_path: Path, sans: list, now: dt.datetime) -> Leaf | None:
        try:
            chain = cert_path.read_bytes()
            cert = x509.load_pem_x509_certificate(chain)
            key = load_ec_key(key_path)
            cert.verify_directly_issued_by(self.cert)
            current = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
            return None
        if set(current) != set(sans) or cert.not_valid_after_utc < now + dt.timedelta(days=30) \
                or cert.not_valid_before_utc > now or key.public_key() != cert.public_key() \
                or not chain.endswith(cert_pem(self.cert)):
            return None
        return Leaf(cert, key, cert_path, key_path)

    def issue_profile_signer(self, organization: str) -> Leaf:
        """The certificate that signs enrollment profiles.

        emailProtection EKU (not serverAuth) so ``openssl cms -verify`` accepts it with its default purpose;
        no DNS names, so the name constraints do not apply to it.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            self._builder(_name(f"{organization} Profile Signing"), key.public_key(),
                          now - dt.timedelta(hours=1), now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(SIGNING_ONLY, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        d = self.directory / "signing"
        write_private(d / "profile-signer.key", key_pem(key))
        (d / "profile-signer.pem").write_bytes(cert_pem(cert))
        return Leaf(cert, key, d / "profile-signer.pem", d / "profile-signer.key")
