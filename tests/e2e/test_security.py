"""Security: the CA key and tokens never leave the state dir in clear, the CA cannot vouch for names outside the
lab's zones, the lab listens on loopback by default and asks for the admin token beyond it."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import fleet
from lab.launcher import Lab, LabError
from lab.pki import cert_pem, key_pem
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run


def _session(lab) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(lab.pki.cert_path)
    return s


def _all_bytes(directory: Path) -> bytes:
    """Every file of the state dir, databases and their write-ahead logs included."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


# -- secrets at rest ---------------------------------------------------------------------------------------------

def test_tokens_and_passwords_never_reach_the_state_dir_or_the_timeline_in_clear(lab, tmp_path):
    target = fleet.Target.from_info(lab.describe(), [(IDENTIFIER, PASSWORD)])
    report = fleet.run(target, 6, 3, journal=tmp_path / "journal")
    assert report.enrolled == 6
    tokens = [r["access_token"] for r in fleet.Journal.read(tmp_path / "journal")]
    assert len(set(tokens)) == 6
    fleet.recheck(target, fleet.Journal.read(tmp_path / "journal"))  # the tokens travel once more
    timeline = json.dumps(lab.events.query(limit=5000))  # also commits every queued event to disk
    with _session(lab) as s:
        state = s.get(f"https://localhost:{lab.https_port}/api/state", timeout=10).text
    stored = _all_bytes(lab.state_dir)
    for secret in [*tokens, PASSWORD]:
        assert secret not in timeline
        assert secret not in state
        for encoding in ("utf-8", "utf-16-le"):
            assert secret.encode(encoding) not in stored, "a secret is stored in clear"


def test_the_ca_key_stays_in_its_0600_file(lab):
    key_file = lab.pki.key_path
    assert key_file.parent == lab.state_dir / "pki"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    body = b"".join(line for line in key_file.read_bytes().splitlines() if not line.startswith(b"-----"))
    secret = body[48:]  # past the ASN.1 prefix every P-256 PKCS#8 key shares
    scalar = lab.pki.key.private_numbers().private_value.to_bytes(32, "big")
    elsewhere = b"".join(p.read_bytes() for p in sorted(lab.state_dir.rglob("*")) if p.is_file() and p != key_file)
    assert secret[:32] not in elsewhere and scalar not in elsewhere
    for private in lab.state_dir.rglob("*"):
        if private.is_file() and b"PRIVATE KEY" in private.read_bytes()[:64]:
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    with _session(lab) as s:
        for path in ("/ca.pem", "/api/health", "/api/state"):
            answer = s.get(f"https://localhost:{lab.https_port}{path}", timeout=10)
            assert b"PRIVATE KEY" not in answer.content and secret[:32] not in answer.content


def test_databases_and_journals_are_owner_only_in_an_owner_only_state_dir(lab, device):
    """Issue 13 §6 (F19): mdm.db, events.db and devices.db (and their -wal/-shm) hold password and token hashes,
    push secrets and the devices' sealed data with their keys."""
    from lab.device.store import DeviceStore

    report = fleet.run(fleet.target_from_state_dir(lab.state_dir), 1, 1, journal=lab.state_dir / "fleet.jsonl")
    assert report.enrolled == 1
    phone = device()
    assert phone.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    saved = DeviceStore(lab.state_dir)
    saved.save(phone)
    saved.store.close()
    assert stat.S_IMODE(lab.state_dir.stat().st_mode) == 0o700
    stored = [p for p in lab.state_dir.rglob("*") if p.is_file() and (".db" in p.name or p.suffix == ".jsonl")]
    assert {p.name for p in stored} >= {"mdm.db", "events.db", "devices.db", "fleet.jsonl"}
    loose = {str(p.relative_to(lab.state_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in stored
             if stat.S_IMODE(p.stat().st_mode) != 0o600}
    assert loose == {}
    for directory in {p.parent for p in stored}:
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory


# -- the CA's name constraints -----------------------------------------------------------------------------------

def _forge(lab, name: str, path: Path) -> tuple[Path, Path]:
    """A leaf for ``name`` signed with the lab CA's own key: what a thief of the key could make."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    try:
        san, common_name = x509.IPAddress(ipaddress.ip_address(name)), f"forged {name}"
    except ValueError:
        san, common_name = x509.DNSName(name), name
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(lab.pki.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(lab.pki.key, hashes.SHA256()))
    cert_path, key_path = path / f"{name}.pem", path / f"{name}.key"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path


@pytest.mark.parametrize("name, allowed", [
    ("www.example.com", False),   # outside every lab zone
    ("apple.com", False),
    ("betterbag.test.evil.com", False),  # a lab zone as a prefix is not the zone
    ("10.1.2.3", False),          # an address outside loopback
    ("anything.lab.test", True),  # inside: the control that the forgery itself is sound
    ("127.0.0.9", True),
])
def test_a_forged_leaf_outside_the_zones_fails_verification(lab, tmp_path, name, allowed):
    openssl = require_tool("openssl")
    cert_path, _ = _forge(lab, name, tmp_path)
    result = run([openssl, "verify", "-CAfile", str(lab.pki.cert_path), str(cert_path)])
    output = (result.stdout + result.stderr).decode()
    if allowed:
        assert result.returncode == 0, output
    else:
        assert result.returncode != 0 and "permitted subtree violation" in output, output


def test_a_tls_server_with_a_forged_out_of_zone_leaf_is_refused_by_a_client_trusting_the_lab_ca(lab, tmp_path):
    cert_path, key_path = _forge(lab, "www.example.com", tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="permitted subtree violation"):
                client_ctx.wrap_socket(raw, server_hostname="www.example.com")
    finally:
        listener.close()
        thread.join(timeout=10)


# -- where the lab listens, and who may use its console ----------------------------------------------------------

def test_the_lab_listens_on_loopback_by_default(lab):
    assert lab.listen == "127.0.0.1"
    assert ipaddress.ip_address(lab.https.socket.getsockname()[0]).is_loopback
    for sock in (lab.dns.udp, lab.dns.tcp):
        assert ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    assert lab.admin_token is None


def test_listening_on_every_address_is_refused(tmp_path):
    with pytest.raises(LabError, match="0.0.0.0"):
        Lab(load("betterbag"), tmp_path, listen="0.0.0.0").start()


def test_beyond_loopback_the_console_wants_the_admin_token_and_the_timeline_hides_it(tmp_path):
    # A lab beyond loopback gets an admin token; the same lab on loopback with a token set shows the behaviour
    # without leaving the machine.
    beyond = Lab(load("betterbag"), tmp_path / "lab", https_port=0, dns_port=0)
    beyond.admin_token = "mdmlab-admin-" + "x7" * 12
    with beyond:
        token_file = beyond.state_dir / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert json.loads((beyond.state_dir / "lab.json").read_text())["admin_token_required"] is True
        assert beyond.admin_token not in (beyond.state_dir / "lab.json").read_text()
        url = f"https://localhost:{beyond.https_port}/api/health"
        with _session(beyond) as s:
            refused = s.get(url, timeout=10)
            assert refused.status_code == 401 and refused.json()["error"] == "admin-token-required"
            wrong = s.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
            assert wrong.status_code == 401
            ok = s.get(url, headers={"Authorization": f"Bearer {beyond.admin_token}"}, timeout=10)
            assert ok.status_code == 200
            assert s.get(f"https://localhost:{beyond.https_port}/ca.pem", timeout=10).status_code == 200  # public
        timeline = json.dumps(beyond.events.query(limit=5000))
        assert beyond.admin_token not in timeline
        assert "Bearer " in timeline  # the header is there, its value masked
