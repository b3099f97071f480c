"""Tools this project did not write (dig, curl, openssl, plistutil) against a running lab.

Each test drives a stock client the way an IT admin would from a terminal, through the lab's real DNS and TLS,
and judges only by what the tool itself reports (exit codes, its own output, files it wrote). Missing tools are
failures, never skips: scripts/install-test-tools installs them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import plistlib
import re
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run

ORG_DOMAIN = "betterbag.test"
MDM_HOST = "mdm.lab.test"
WELL_KNOWN = "/.well-known/com.apple.remotemanagement"
VERIFICATION_TXT = "apple-domain-verification=mdmlab-interop-check"
CALLBACK_PREFIX = "apple-remotemanagement-user-login://authentication-results"

# The first POST of a device, unsigned, as in Apple's samples (the MDM sniffs the body, not the header).
FIRST_REQUEST = plistlib.dumps({"LANGUAGE": "en-US", "PRODUCT": "iPhone17,2", "VERSION": "23B100"})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default scenario with one TXT record on the org domain (what ABM reads to verify a domain)."""
    base = load("betterbag")
    assert ORG_DOMAIN in [d.name for d in base.domains]
    domains = tuple(dataclasses.replace(d, txt=(*d.txt, VERIFICATION_TXT)) if d.name == ORG_DOMAIN else d
                    for d in base.domains)
    scenario = dataclasses.replace(base, domains=domains)
    with Lab(scenario, tmp_path_factory.mktemp("lab"), https_port=0, dns_port=0) as running:
        yield running


# -- dig -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DigAnswer:
    status: str
    flags: set[str]
    transport: str
    sections: dict[str, list[list[str]]]
    text: str

    def records(self, section: str, rtype: str | None = None) -> list[list[str]]:
        rows = self.sections.get(section, [])
        return [r for r in rows if rtype is None or r[3] == rtype]


def dig(lab, name: str, rtype: str, *options: str) -> DigAnswer:
    out = run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), "+time=2", "+tries=1", "+retry=0",
               *options, name, rtype], timeout=15)
    text = out.stdout.decode()
    assert out.returncode == 0, f"dig exited {out.returncode}: {out.stderr.decode()}\n{text}"
    header = re.search(r"->>HEADER<<- opcode: \w+, status: (\w+)", text)
    flags = re.search(r";; flags: ([a-z ]*);", text)
    server = re.search(r";; SERVER: 127\.0\.0\.1#(\d+)\(127\.0\.0\.1\) \((UDP|TCP)\)", text)
    assert header and flags and server, f"unexpected dig output:\n{text}"
    assert int(server.group(1)) == lab.dns.port
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r";; (\w+) SECTION:", line)
        if m:
            current = m.group(1)
            sections[current] = []
        elif not line.strip():
            current = None
        elif current and current != "QUESTION" and not line.startswith(";"):
            name_, ttl, cls, typ, *rdata = line.split(None, 4)
            sections[current].append([name_, ttl, cls, typ, *rdata])
    return DigAnswer(header.group(1), set(flags.group(1).split()), server.group(2), sections, text)


TRANSPORTS = pytest.mark.parametrize("transport", ["+notcp", "+tcp"], ids=["udp", "tcp"])


@TRANSPORTS
@pytest.mark.parametrize("adflag", [False, True], ids=["plain", "adflag"])
def test_dig_org_domain_a_record_is_authoritative_and_never_claims_dnssec(lab, transport, adflag):
    answer = dig(lab, ORG_DOMAIN, "A", transport, *(["+adflag"] if adflag else []))
    assert answer.transport == ("TCP" if transport == "+tcp" else "UDP")
    assert answer.status == "NOERROR", answer.text
    assert "aa" in answer.flags, answer.text
    assert "ad" not in answer.flags, f"the lab must not claim DNSSEC-validated data:\n{answer.text}"
    assert "ra" not in answer.flags, answer.text
    assert [(r[0], r[3], r[4]) for r in answer.records("ANSWER")] == [(ORG_DOMAIN + ".", "A", "127.0.0.1")]


def test_dig_every_served_host_resolves_to_the_listener(lab):
    for host in lab.dispatcher.hosts:
        if host == "localhost":
            continue
        answer = dig(lab, host, "A")
        assert answer.status == "NOERROR" and "aa" in answer.flags, answer.text
        assert [r[4] for r in answer.records("ANSWER", "A")] == ["127.0.0.1"], answer.text


@TRANSPORTS
def test_dig_unknown_lab_name_is_nxdomain_with_soa(lab, transport):
    answer = dig(lab, "unknown.lab.test", "A", transport)
    assert answer.status == "NXDOMAIN", answer.text
    assert "aa" in answer.flags and "ad" not in answer.flags, answer.text
    assert not answer.records("ANSWER")
    soa = answer.records("AUTHORITY", "SOA")
    assert len(soa) == 1 and soa[0][0] == "lab.test.", answer.text  # negative caching needs the zone's SOA


@TRANSPORTS
def test_dig_txt_record_of_the_org_domain(lab, transport):
    answer = dig(lab, ORG_DOMAIN, "TXT", transport)
    assert answer.status == "NOERROR" and "aa" in answer.flags, answer.text
    got = sorted(r[4] for r in answer.records("ANSWER", "TXT"))
    assert f'"{VERIFICATION_TXT}"' in got, answer.text
    assert got == sorted(f'"{v}"' for v in lab.zone.lookup(ORG_DOMAIN)["TXT"]), answer.text  # all, and only, the zone's


def test_dig_txt_where_none_is_nodata(lab):
    answer = dig(lab, MDM_HOST, "TXT")
    assert answer.status == "NOERROR" and not answer.records("ANSWER"), answer.text
    assert answer.records("AUTHORITY", "SOA"), answer.text


@TRANSPORTS
def test_dig_aaaa_of_an_ipv4_host_is_nodata(lab, transport):
    answer = dig(lab, ORG_DOMAIN, "AAAA", transport)
    assert answer.status == "NOERROR", f"a name that exists answers NODATA, not NXDOMAIN:\n{answer.text}"
    assert "aa" in answer.flags, answer.text
    assert not answer.records("ANSWER"), answer.text
    soa = answer.records("AUTHORITY", "SOA")
    assert len(soa) == 1 and soa[0][0] == ORG_DOMAIN + ".", answer.text


def test_dig_name_outside_the_lab_zones_is_refused(lab):
    answer = dig(lab, "example.com", "A")
    assert answer.status == "REFUSED", answer.text
    assert "aa" not in answer.flags and not answer.records("ANSWER"), answer.text


def test_dns_queries_are_in_the_timeline(lab):
    after = lab.events.last_id()
    dig(lab, ORG_DOMAIN, "A", "+tcp")
    dig(lab, "unknown.lab.test", "A")
    dns = [(e["host"], e["method"], e["status"], e["detail"].get("protocol"))
           for e in lab.events.query(after=after, kind="dns")]
    assert (ORG_DOMAIN, "A", 0, "tcp") in dns, dns
    assert ("unknown.lab.test", "A", 3, "udp") in dns, dns


# -- curl ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CurlResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    body_path: Path

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


_counter = itertools.count()


def curl(lab, tmp_path: Path, *args: str) -> CurlResponse:
    """curl as an admin would run it against the lab: every name dialled on 127.0.0.1:<lab port>, lab CA only."""
    n = next(_counter)
    head, body = tmp_path / f"curl-{n}.headers", tmp_path / f"curl-{n}.body"
    out = run([require_tool("curl"), "-sS", "--max-time", "15", "--noproxy", "*",
               "--connect-to", f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path),
               "-D", str(head), "-o", str(body), *args], timeout=30)
    assert out.returncode == 0, f"curl exited {out.returncode}: {out.stderr.decode()}"
    blocks = [b for b in head.read_bytes().decode("latin-1").split("\r\n\r\n") if b.strip()]
    final = blocks[-1].split("\r\n")  # after any "100 Continue"
    status = int(final[0].split()[1])
    headers = {}
    for line in final[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return CurlResponse(status, headers, body.read_bytes(), body)


def well_known_url(port: int | None = None, identifier: str = IDENTIFIER) -> str:
    origin = f"https://{ORG_DOMAIN}" + (f":{port}" if port else "")
    return f"{origin}{WELL_KNOWN}?user-identifier={identifier}&model-family=iPhone"


def http_exchanges(lab, after: int) -> list[tuple]:
    return [(e["host"], e["method"], e["path"], e["status"]) for e in lab.events.query(after=after, kind="http")]


def test_curl_well_known_on_port_443_url(lab, tmp_path):
    """The URL a phone builds (no port); --connect-to sends it to the lab, SNI and Host stay betterbag.test."""
    after = lab.events.last_id()
    r = curl(lab, tmp_path, well_known_url())
    assert r.status == 200, r.body
    assert r.media_type == "application/json", r.headers
    document = json.loads(r.body)
    server = document["Servers"][0]
    assert server["Version"] == "mdm-byod"
    assert urlsplit(server["BaseURL"]).scheme == "https"
    assert server["BaseURL"] == lab.urls["mdm"]["base_url"]
    assert urlsplit(server["BaseURL"]).port == lab.https_port  # the lab writes its port into the URLs it emits
    assert (ORG_DOMAIN, "GET", WELL_KNOWN, 200) in http_exchanges(lab, after)


def test_curl_first_enrollment_post_gets_the_bearer_challenge(lab, tmp_path):
    base_url = json.loads(curl(lab, tmp_path, well_known_url()).body)["Servers"][0]["BaseURL"]
    r = curl(lab, tmp_path, "-X", "POST", "-H", "Content-Type: application/xml", "--data-binary",
             f"@{_write(tmp_path / 'first.plist', FIRST_REQUEST)}", base_url)
    assert r.status == 401, r.body
    assert r.headers.get("www-authenticate") == \
        f'Bearer method="apple-as-web", url="https://{MDM_HOST}:{lab.https_port}/auth/web"'


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _challenge_url(header: str) -> str:
    assert header.startswith("Bearer "), header
    params = dict(re.findall(r'([\w-]+)="([^"]*)"', header))
    assert params.get("method") == "apple-as-web", header
    return params["url"]


def test_curl_only_simple_flow_then_openssl_and_plistutil_accept_the_profile(lab, tmp_path):
    openssl, plistutil = require_tool("openssl"), require_tool("plistutil")
    ca = str(lab.pki.cert_path)
    after = lab.events.last_id()

    # Stage 1: discovery.
    base_url = json.loads(curl(lab, tmp_path, well_known_url()).body)["Servers"][0]["BaseURL"]
    first = _write(tmp_path / "first.plist", FIRST_REQUEST)

    # Stage 2: challenge, sign-in page, form post, 308 to the device's callback scheme.
    challenge = curl(lab, tmp_path, "-H", "Content-Type: application/xml", "--data-binary", f"@{first}", base_url)
    assert challenge.status == 401
    auth_url = _challenge_url(challenge.headers["www-authenticate"])
    page = curl(lab, tmp_path, "--get", "--data-urlencode", f"user-identifier={IDENTIFIER}", auth_url)
    assert page.status == 200 and page.media_type == "text/html", page.headers
    html = page.body.decode()
    form = re.search(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)
    assert form, html
    assert 'name="user-identifier"' in html and 'name="password"' in html
    assert f'value="{IDENTIFIER}"' in html  # prefilled from the query, as PROTOCOL.md 2.3 allows
    signed_in = curl(lab, tmp_path, "--data-urlencode", f"user-identifier={IDENTIFIER}",
                     "--data-urlencode", f"password={PASSWORD}", urljoin(auth_url, form.group(1)))
    assert signed_in.status == 308, signed_in.body
    location = signed_in.headers["location"]
    assert location.startswith(CALLBACK_PREFIX + "?"), location
    token = parse_qs(urlsplit(location).query)["access-token"][0]
    assert token

    # Stage 2, second attempt, and stage 3: the profile.
    profile = curl(lab, tmp_path, "-H", "Content-Type: application/xml", "-H", f"Authorization: Bearer {token}",
                   "--data-binary", f"@{first}", base_url)
    assert profile.status == 200, profile.body
    assert profile.media_type == "application/x-apple-aspen-config", profile.headers
    profile_path = _write(tmp_path / "enrollment.mobileconfig", profile.body)

    # openssl cms -out writes the content even when verification fails: judge by the exit code only.
    content_path = tmp_path / "content.plist"
    verified = run([openssl, "cms", "-verify", "-inform", "DER", "-in", str(profile_path), "-CAfile", ca,
                    "-out", str(content_path)])
    assert verified.returncode == 0, verified.stderr.decode()
    assert b"Verification successful" in verified.stderr
    content = content_path.read_bytes()
    assert content in profile.body, "the signed content must be carried byte for byte (Binary, no CRLF rewrite)"

    # plistutil exits 0 on errors: judge by parsing what it wrote. XML -> binary -> XML.
    binary_path, xml_path = tmp_path / "out.bin", tmp_path / "out.xml"
    run([plistutil, "-i", str(content_path), "-o", str(binary_path)])
    run([plistutil, "-i", str(binary_path), "-o", str(xml_path)])
    assert binary_path.read_bytes().startswith(b"bplist00"), "plistutil wrote no binary plist"
    assert xml_path.read_bytes().lstrip().startswith(b"<?xml"), "plistutil wrote no XML plist"
    document = plistlib.loads(xml_path.read_bytes())
    assert document == plistlib.loads(binary_path.read_bytes()) == plistlib.loads(content)
    assert document["PayloadType"] == "Configuration"
    mdm = [p for p in document["PayloadContent"] if p["PayloadType"] == "com.apple.mdm"]
    assert len(mdm) == 1
    assert mdm[0]["EnrollmentMode"] == "BYOD" and mdm[0]["AssignedManagedAppleID"] == IDENTIFIER
    assert "AccessRights" not in mdm[0]
    assert mdm[0]["Topic"].startswith("com.apple.mgmt.")
    assert urlsplit(mdm[0]["ServerURL"]).scheme == "https"
    identity = [p for p in document["PayloadContent"] if p["PayloadUUID"] == mdm[0]["IdentityCertificateUUID"]]
    assert len(identity) == 1

    # One byte changed in the middle of the signed content: openssl must refuse it.
    tampered = bytearray(profile.body)
    middle = profile.body.find(content) + len(content) // 2
    tampered[middle] ^= 0x01
    tampered_path = _write(tmp_path / "tampered.mobileconfig", bytes(tampered))
    refused = run([openssl, "cms", "-verify", "-inform", "DER", "-in", str(tampered_path), "-CAfile", ca,
                   "-out", str(tmp_path / "tampered.plist")])
    assert refused.returncode != 0, "openssl accepted a profile whose content was changed after signing"

    # The same profile checked against a CA the lab did not make: openssl must refuse it too.
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(_self_signed_ca("not the lab").public_bytes(serialization.Encoding.PEM))
    untrusted = run([openssl, "cms", "-verify", "-inform", "DER", "-in", str(profile_path), "-CAfile",
                     str(other_ca), "-out", str(tmp_path / "untrusted.plist")])
    assert untrusted.returncode != 0, "openssl accepted the profile with an unrelated CA"

    # The timeline has every exchange, and never the token in full.
    assert http_exchanges(lab, after) == [
        (ORG_DOMAIN, "GET", WELL_KNOWN, 200),
        (MDM_HOST, "POST", "/enroll", 401),
        (MDM_HOST, "GET", "/auth/web", 200),
        (MDM_HOST, "POST", "/auth/web", 308),
        (MDM_HOST, "POST", "/enroll", 200),
    ]
    timeline = json.dumps(lab.events.query(after=after))
    assert token not in timeline and PASSWORD not in timeline


# -- openssl: the CA and the TLS certificates ---------------------------------------------------------------------
def _self_signed_ca(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def test_openssl_shows_critical_name_constraints_on_the_ca(lab):
    out = run([require_tool("openssl"), "x509", "-in", str(lab.pki.cert_path), "-noout", "-text"])
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    lines = [line.strip() for line in text.splitlines()]
    assert "X509v3 Name Constraints: critical" in lines, text
    start = lines.index("X509v3 Name Constraints: critical")
    block = []
    for line in lines[start + 1:]:
        if line.startswith("X509v3 ") or not line:
            break
        block.append(line)
    assert block[0] == "Permitted:", block
    assert "Excluded:" not in block
    for name in ("DNS:betterbag.test", "DNS:lab.test", "IP:127.0.0.0/255.0.0.0"):
        assert name in block, f"{name} missing from the name constraints: {block}"
    assert not [n for n in block if n.startswith("DNS:") and "*" in n], block
    assert "CA:TRUE" in text


def _leaf(lab, host: str, tmp_path: Path, *, org: str = "mdmlab") -> Path:
    """A leaf for ``host`` signed with the lab CA's key, kept out of the lab's state dir."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                     x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(lab.pki.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(lab.pki.key, hashes.SHA256()))
    return _write(tmp_path / f"{host}.pem", cert.public_bytes(serialization.Encoding.PEM))


def test_openssl_enforces_the_name_constraints(lab, tmp_path):
    """The constraints bite: even with the CA's own key, a name outside the lab zones does not verify."""
    openssl = require_tool("openssl")
    inside = run([openssl, "verify", "-CAfile", str(lab.pki.cert_path), "-purpose", "sslserver",
                  str(_leaf(lab, "extra.lab.test", tmp_path))])
    assert inside.returncode == 0, inside.stdout.decode() + inside.stderr.decode()
    outside = run([openssl, "verify", "-CAfile", str(lab.pki.cert_path), "-purpose", "sslserver",
                   str(_leaf(lab, "www.apple.com", tmp_path))])
    report = (outside.stdout + outside.stderr).decode()
    assert outside.returncode != 0, report
    assert "permitted subtree violation" in report, report


def s_client(lab, servername: str, *extra: str) -> str:
    out = run([require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{lab.https_port}",
               "-servername", servername, "-CAfile", str(lab.pki.cert_path), "-verify_return_error", *extra],
              input=b"", timeout=20)
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    assert out.returncode == 0, f"s_client exited {out.returncode}:\n{text}"
    return text


def _subject_cn(s_client_output: str) -> str:
    m = re.search(r"^subject=.*CN\s*=\s*([^\s,/]+)", s_client_output, re.M)
    assert m, s_client_output
    return m.group(1)


@pytest.mark.parametrize("host", [MDM_HOST, ORG_DOMAIN, "console.lab.test"])
def test_openssl_s_client_verifies_and_sni_selects_the_certificate(lab, host):
    text = s_client(lab, host, "-verify_hostname", host)
    assert "Verify return code: 0 (ok)" in text, text
    assert _subject_cn(text) == host, text


def test_openssl_s_client_unknown_sni_gets_the_console_certificate(lab):
    text = s_client(lab, "nowhere.lab.test")
    assert "Verify return code: 0 (ok)" in text, text  # chain is good; the name is the client's problem
    assert _subject_cn(text) == "console.lab.test", text


def test_openssl_verify_accepts_every_host_certificate_file(lab, tmp_path):
    openssl = require_tool("openssl")
    served = {h for h in lab.dispatcher.hosts if h != "localhost"}  # localhost rides on the console's cert
    # <host>.pem is the certificate a host serves; <host>.<tag>.pem files are deliberately broken (TLS faults).
    files = sorted(p for p in (lab.state_dir / "pki" / "hosts").glob("*.pem") if p.stem in served)
    assert {f.stem for f in files} == served, files
    for path in files:
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", path.read_bytes(), re.S)
        assert len(blocks) >= 1, path
        leaf = _write(tmp_path / f"leaf-{path.stem}.pem", blocks[0])
        out = run([openssl, "verify", "-CAfile", str(lab.pki.cert_path), "-purpose", "sslserver",
                   "-verify_hostname", path.stem, str(leaf)])
        report = (out.stdout + out.stderr).decode()
        assert out.returncode == 0 and report.strip().endswith(": OK"), f"{path.name}: {report}"
