"""lab.pki: the name-constrained lab root, its TLS leaves and the profile signer.

The name constraints are what keep a device that trusts the lab CA safe outside the lab, so they are checked
twice: by reading the extension, and by two real verifiers (OpenSSL through Python's ssl module on a loopback
TLS server, and cryptography's x509.verification) refusing a leaf the lab key signed for a name outside the zone.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.pki import CertificateAuthority, cert_pem, key_pem
from lab.scenario import load
from tests.conftest import require_tool

SUFFIXES = ["betterbag.test", "lab.test", "localhost"]
X509_V_ERR_PERMITTED_VIOLATION = 47  # OpenSSL: "permitted subtree violation"
MAX_LEAF_DAYS = 398


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki", SUFFIXES)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


# -- the root -----------------------------------------------------------------------------------------------------

def test_root_is_an_ecdsa_p256_ca(ca):
    key = ca.cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.cert.subject == ca.cert.issuer
    basic = ext(ca.cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    assert ext(ca.cert, x509.KeyUsage).value.key_cert_sign is True
    ca.cert.verify_directly_issued_by(ca.cert)  # self-signed with its own key


def test_name_constraints_are_critical_and_exactly_the_scenario_zone(tmp_path):
    scenario = load("betterbag")
    ca = CertificateAuthority(tmp_path / "pki", scenario.suffixes)
    nc = ext(ca.cert, x509.NameConstraints)
    assert nc.critical is True
    assert nc.value.excluded_subtrees is None
    dns = sorted(n.value for n in nc.value.permitted_subtrees if isinstance(n, x509.DNSName))
    ips = {n.value for n in nc.value.permitted_subtrees if isinstance(n, x509.IPAddress)}
    others = [n for n in nc.value.permitted_subtrees if not isinstance(n, (x509.DNSName, x509.IPAddress))]
    emails = sorted(n.value for n in others if isinstance(n, x509.RFC822Name))
    uris = sorted(n.value for n in others if isinstance(n, x509.UniformResourceIdentifier))
    assert dns == sorted(scenario.suffixes)
    assert {"betterbag.test", "lab.test"} <= set(dns)
    assert ipaddress.ip_network("127.0.0.0/8") in ips
    assert ips <= {ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")}
    # mailboxes and URIs too (issue 13 §6), each at a zone or below it; nothing else
    zones = sorted([*scenario.suffixes, *("." + s for s in scenario.suffixes)])
    assert emails == zones and uris == zones
    assert len(others) == len(emails) + len(uris)


def test_a_root_constrained_for_dns_names_only_is_replaced(tmp_path):
    """A state dir from before email and URI constraints gets a new root, not the loose one."""
    ca = CertificateAuthority(tmp_path / "pki", SUFFIXES)
    dns_only = x509.NameConstraints(permitted_subtrees=[x509.DNSName(s) for s in SUFFIXES], excluded_subtrees=None)
    old = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(ca.cert.subject)
           .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(ca.cert.not_valid_before_utc).not_valid_after(ca.cert.not_valid_after_utc)
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .add_extension(dns_only, critical=True).sign(ca.key, hashes.SHA256()))
    ca.cert_path.write_bytes(cert_pem(old))
    again = CertificateAuthority(tmp_path / "pki", SUFFIXES)
    assert again.cert != old and again.key.public_key() != ca.key.public_key()


def test_suffixes_are_normalised(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki", ["Lab.Test.", "lab.test", "BetterBag.test"])
    assert ca.suffixes == ["betterbag.test", "lab.test"]


@pytest.mark.parametrize("host, permitted", [
    ("lab.test", True), ("mdm.lab.test", True), ("MDM.Lab.Test.", True), ("betterbag.test", True),
    ("localhost", True), ("www.apple.com", False), ("evillab.test", False), ("lab.test.evil.com", False),
])
def test_permits(ca, host, permitted):
    assert ca.permits(host) is permitted


def test_key_files_are_owner_only_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        ca = CertificateAuthority(tmp_path / "pki", SUFFIXES)
        leaf = ca.issue_server("mdm.lab.test")
        signer = ca.issue_profile_signer("BetterBag")
    finally:
        os.umask(old)
    for path in (ca.key_path, leaf.key_path, signer.key_path):
        assert mode(path) == 0o600, path
    assert not list(tmp_path.rglob("*.tmp"))


def test_root_is_reused_by_a_second_authority_on_the_same_directory(tmp_path):
    first = CertificateAuthority(tmp_path / "pki", SUFFIXES)
    second = CertificateAuthority(tmp_path / "pki", list(reversed(SUFFIXES)))
    assert second.cert == first.cert
    assert second.key.private_numbers() == first.key.private_numbers()


def test_reuse_restores_the_key_file_mode(tmp_path):
    first = CertificateAuthority(tmp_path / "pki", SUFFIXES)
    os.chmod(first.key_path, 0o644)
    CertificateAuthority(tmp_path / "pki", SUFFIXES)
    assert mode(first.key_path) == 0o600


def test_root_is_regenerated_when_the_zone_changes(tmp_path):
    first = CertificateAuthority(tmp_path / "pki", SUFFIXES)
    old_leaf = first.issue_server("mdm.lab.test")
    second = CertificateAuthority(tmp_path / "pki", [*SUFFIXES, "other.test"])
    assert second.cert.serial_number != first.cert.serial_number
    assert second.key.private_numbers() != first.key.private_numbers()
    dns = sorted(n.value for n in ext(second.cert, x509.NameConstraints).value.permitted_subtrees
                 if isinstance(n, x509.DNSName))
    assert dns == sorted([*SUFFIXES, "other.test"])
    assert not old_leaf.cert_path.exists() and not old_leaf.key_path.exists()  # leaves of the old root are gone
    assert x509.load_pem_x509_certificate(second.cert_path.read_bytes()) == second.cert


# -- leaves -------------------------------------------------------------------------------------------------------

def test_server_leaf_names_usage_and_validity(ca):
    leaf = ca.issue_server("console.lab.test", names=["localhost", "127.0.0.1"])
    san = ext(leaf.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["console.lab.test", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(ext(leaf.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ext(leaf.cert, x509.BasicConstraints).value.ca is False
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC)
    assert leaf.cert.not_valid_before_utc <= now < leaf.cert.not_valid_after_utc
    assert leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc <= dt.timedelta(days=MAX_LEAF_DAYS)
    leaf.cert.verify_directly_issued_by(ca.cert)


def test_server_leaf_file_holds_leaf_then_root(ca):
    leaf = ca.issue_server("mdm.lab.test")
    chain = x509.load_pem_x509_certificates(leaf.cert_path.read_bytes())
    assert chain == [leaf.cert, ca.cert]
    assert leaf.key_path.read_bytes() == key_pem(leaf.key)


def test_leaf_does_not_verify_against_another_root(ca, tmp_path):
    other = CertificateAuthority(tmp_path / "other", SUFFIXES)
    leaf = ca.issue_server("mdm.lab.test")
    assert other.cert.subject == ca.cert.subject  # same name, other key: only the signature tells them apart
    with pytest.raises(InvalidSignature):
        leaf.cert.verify_directly_issued_by(other.cert)


def test_profile_signer_is_for_email_protection_without_names(ca):
    signer = ca.issue_profile_signer("BetterBag")
    assert list(ext(signer.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    with pytest.raises(x509.ExtensionNotFound):
        ext(signer.cert, x509.SubjectAlternativeName)
    assert "BetterBag" in signer.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert signer.cert.not_valid_after_utc - signer.cert.not_valid_before_utc <= dt.timedelta(days=MAX_LEAF_DAYS)
    signer.cert.verify_directly_issued_by(ca.cert)


# -- the name constraints, as real verifiers see them -------------------------------------------------------------

def forge_leaf(ca: CertificateAuthority, name: str, tmp_path):
    """A leaf for ``name`` signed with the lab CA key, built by hand (not through issue_server).

    The common name is not host-like, so the SAN is the only name a verifier checks.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        general_name = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        general_name = x509.DNSName(name)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"forged leaf for {name}")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([general_name]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"forged-{name}.pem", tmp_path / f"forged-{name}.key"
    cert_path.write_bytes(cert_pem(cert) + cert_pem(ca.cert))
    key_path.write_bytes(key_pem(key))
    return cert, cert_path, key_path


@contextlib.contextmanager
def tls_server(cert_path, key_path):
    """A one-connection TLS server on 127.0.0.1 (ephemeral port) presenting ``cert_path``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def tls_connect(port: int, server_hostname: str, cafile) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; the lab CA must pass it too
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(5)


OUT_OF_ZONE = ["www.apple.com", "evilbetterbag.test", "lab.test.attacker.example", "10.0.0.1"]
IN_ZONE = ["mdm.lab.test", "betterbag.test", "localhost", "127.0.0.1"]


@pytest.mark.parametrize("name", OUT_OF_ZONE)
def test_openssl_rejects_a_forged_out_of_zone_leaf(ca, tmp_path, name):
    _, cert_path, key_path = forge_leaf(ca, name, tmp_path)
    with tls_server(cert_path, key_path) as port:
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            tls_connect(port, name, ca.cert_path)
    assert failure.value.verify_code == X509_V_ERR_PERMITTED_VIOLATION, failure.value.verify_message


@pytest.mark.parametrize("name", IN_ZONE)
def test_openssl_accepts_an_in_zone_leaf(ca, tmp_path, name):
    _, cert_path, key_path = forge_leaf(ca, name, tmp_path)
    with tls_server(cert_path, key_path) as port:
        assert tls_connect(port, name, ca.cert_path) == b"hello"


@pytest.mark.parametrize("host, names, connect_as", [
    ("mdm.lab.test", [], "mdm.lab.test"),
    ("console.lab.test", ["localhost", "127.0.0.1"], "127.0.0.1"),
    ("console.lab.test", ["localhost", "127.0.0.1"], "localhost"),
    ("127.0.0.1", [], "127.0.0.1"),  # an IP host: its CN must not be checked as a DNS name against the zone
])
def test_openssl_accepts_the_leaves_issue_server_writes(ca, host, names, connect_as):
    leaf = ca.issue_server(host, names=names)
    with tls_server(leaf.cert_path, leaf.key_path) as port:
        assert tls_connect(port, connect_as, ca.cert_path) == b"hello"


def _subject(name: str):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@pytest.mark.parametrize("name", OUT_OF_ZONE)
def test_cryptography_verifier_rejects_a_forged_out_of_zone_leaf(ca, tmp_path, name):
    cert, _, _ = forge_leaf(ca, name, tmp_path)
    verifier = verification.PolicyBuilder().store(verification.Store([ca.cert])) \
        .build_server_verifier(_subject(name))
    with pytest.raises(verification.VerificationError, match="name constraint"):
        verifier.verify(cert, [])


@pytest.mark.parametrize("name", IN_ZONE)
def test_cryptography_verifier_accepts_in_zone_leaves(ca, name):
    leaf = ca.issue_server(name)
    verifier = verification.PolicyBuilder().store(verification.Store([ca.cert])) \
        .build_server_verifier(_subject(name))
    assert verifier.verify(leaf.cert, []) == [leaf.cert, ca.cert]


# -- leaves reused across restarts -------------------------------------------------------------------------------

def test_a_plain_leaf_is_reused_by_the_next_start(tmp_path):
    first = CertificateAuthority(tmp_path, ["lab.test"]).issue_server("mdm.lab.test", names=["127.0.0.1"])
    again = CertificateAuthority(tmp_path, ["lab.test"]).issue_server("mdm.lab.test", names=["127.0.0.1"])
    assert again.cert == first.cert and key_pem(again.key) == key_pem(first.key)


@pytest.mark.parametrize("change", ["names", "zone", "key", "expiring", "tagged"])
def test_a_leaf_is_issued_anew_when_it_no_longer_fits(tmp_path, change):
    ca = CertificateAuthority(tmp_path, ["lab.test"])
    first = ca.issue_server("mdm.lab.test")
    if change == "names":
        again = ca.issue_server("mdm.lab.test", names=["other.lab.test"])
    elif change == "zone":  # a new root: every leaf of the old one goes
        again = CertificateAuthority(tmp_path, ["lab.test", "other.test"]).issue_server("mdm.lab.test")
    elif change == "key":
        first.key_path.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
        again = ca.issue_server("mdm.lab.test")
    elif change == "expiring":
        now = dt.datetime.now(dt.UTC)
        ca.issue_server("mdm.lab.test", not_after=now + dt.timedelta(days=3))
        first = ca.issue_server("mdm.lab.test")  # a short-lived leaf is not kept for reuse
        again = ca.issue_server("mdm.lab.test")
        assert again.cert.not_valid_after_utc > now + dt.timedelta(days=300)
        return
    else:
        again = ca.issue_server("mdm.lab.test", tag="expired")
        assert again.cert_path != first.cert_path
    assert again.cert.serial_number != first.cert.serial_number
    again.cert.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes()))


# -- mailboxes and URIs: S/MIME and URI certificates are confined to the lab's zones too (issue 13 §6, F18) --------

def forge_identity(ca: CertificateAuthority, name: x509.GeneralName, usage, tmp_path) -> tuple:
    """A leaf signed with the lab CA key for a mailbox or a URI, as a thief of the key would make one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged identity")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([name]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    stem = tmp_path / f"identity-{abs(hash(name.value))}"
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path


def openssl_verify(ca: CertificateAuthority, cert_path, purpose: str) -> tuple[int, str]:
    out = subprocess.run([require_tool("openssl"), "verify", "-CAfile", str(ca.cert_path), "-purpose", purpose,
                          str(cert_path)], capture_output=True, timeout=30)
    return out.returncode, (out.stdout + out.stderr).decode()


IDENTITIES = [  # (name, usage, openssl purpose, allowed)
    (x509.RFC822Name("ceo@apple.com"), ExtendedKeyUsageOID.EMAIL_PROTECTION, "smimesign", False),
    (x509.RFC822Name("ceo@betterbag.test.attacker.example"), ExtendedKeyUsageOID.EMAIL_PROTECTION, "smimesign", False),
    (x509.RFC822Name("eliza@betterbag.test"), ExtendedKeyUsageOID.EMAIL_PROTECTION, "smimesign", True),
    (x509.RFC822Name("it@mail.betterbag.test"), ExtendedKeyUsageOID.EMAIL_PROTECTION, "smimesign", True),
    (x509.UniformResourceIdentifier("https://www.google.com/"), ExtendedKeyUsageOID.SERVER_AUTH, "sslserver", False),
    (x509.UniformResourceIdentifier("https://mdm.lab.test.attacker.example/"), ExtendedKeyUsageOID.SERVER_AUTH,
     "sslserver", False),
    (x509.UniformResourceIdentifier("https://mdm.lab.test/mdm"), ExtendedKeyUsageOID.SERVER_AUTH, "sslserver", True),
    (x509.UniformResourceIdentifier("https://betterbag.test/"), ExtendedKeyUsageOID.SERVER_AUTH, "sslserver", True),
]


@pytest.mark.parametrize("name, usage, purpose, allowed", IDENTITIES, ids=[i[0].value for i in IDENTITIES])
def test_openssl_confines_mailboxes_and_uris_to_the_lab_zones(ca, tmp_path, name, usage, purpose, allowed):
    cert_path, _ = forge_identity(ca, name, usage, tmp_path)
    code, output = openssl_verify(ca, cert_path, purpose)
    if allowed:
        assert code == 0, output
    else:
        assert code != 0 and "permitted subtree violation" in output, output


def test_openssl_cms_refuses_a_message_signed_for_another_organizations_address(ca, tmp_path):
    openssl = require_tool("openssl")
    cert_path, key_path = forge_identity(ca, x509.RFC822Name("ceo@apple.com"), ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                         tmp_path)
    message, signed = tmp_path / "message.txt", tmp_path / "message.p7s"
    message.write_bytes(b"wire the money")
    sign = subprocess.run([openssl, "cms", "-sign", "-binary", "-in", str(message), "-signer", str(cert_path),
                           "-inkey", str(key_path), "-outform", "DER", "-out", str(signed), "-nodetach"],
                          capture_output=True, timeout=30)
    assert sign.returncode == 0, sign.stderr.decode()
    verify = subprocess.run([openssl, "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile",
                             str(ca.cert_path), "-out", os.devnull], capture_output=True, timeout=30)
    assert verify.returncode != 0, "an S/MIME signature for ceo@apple.com verified under the lab CA"
    assert "permitted subtree violation" in verify.stderr.decode()
