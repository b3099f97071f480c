"""An MDM that parses the enrollment request by its Content-Type (PROTOCOL.md 2.1, 6.7), through the lab's real DNS
(dig) and TLS (curl): iOS 15's application/x-www-form-urlencoded label on the signed body breaks it, the label
today's devices send does not."""
from __future__ import annotations

import json
import plistlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from lab import cms
from lab.launcher import Lab
from lab.pki import self_signed
from lab.scenario import load
from tests.conftest import require_tool, run

MDM_HOST = "mdm.lab.test"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("mdm-parses-by-content-type"), tmp_path_factory.mktemp("lab"), https_port=0,
             dns_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def signed_request(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    body = cms.sign(plistlib.dumps({"LANGUAGE": "en-US", "PRODUCT": "iPhone14,5", "VERSION": "19H12"}),
                    self_signed("an iOS 15 iPhone", key, days=1), key)
    path = tmp_path_factory.mktemp("body") / "enroll.p7s"
    path.write_bytes(body)
    return path


def post(lab, tmp_path, body, content_type: str) -> tuple[int, bytes]:
    address = run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), MDM_HOST, "A", "+short"])
    resolved = address.stdout.decode().split()[0]
    answer = tmp_path / "answer"
    out = run([require_tool("curl"), "-sS", "--max-time", "15", "--noproxy", "*", "--cacert", str(lab.pki.cert_path),
               "--resolve", f"{MDM_HOST}:{lab.https_port}:{resolved}", "-o", str(answer), "-w", "%{http_code}",
               "-H", f"Content-Type: {content_type}", "--data-binary", f"@{body}",
               f"https://{MDM_HOST}:{lab.https_port}/enroll"])
    assert out.returncode == 0, out.stderr.decode()
    return int(out.stdout.decode()), answer.read_bytes()


def test_ios_15s_form_label_gets_a_400_that_says_why(lab, tmp_path, signed_request):
    mark = lab.events.last_id()
    status, body = post(lab, tmp_path, signed_request, "application/x-www-form-urlencoded")
    assert status == 400
    assert json.loads(body)["error"] == "body-parsed-as-form"
    assert "iOS 15" in json.loads(body)["message"]
    assert [(e["path"], e["status"]) for e in lab.events.query(after=mark, component="mdm")] == [("/enroll", 400)]


def test_the_same_body_labelled_pkcs7_signature_gets_the_challenge(lab, tmp_path, signed_request):
    status, body = post(lab, tmp_path, signed_request, "application/pkcs7-signature")
    assert status == 401 and json.loads(body)["error"] == "token-required"
