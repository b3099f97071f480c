"""The token of GetToken with TokenServiceType com.apple.maid (dev:get-token): Apple's identity service asks the
device for it when a Managed Apple Account signs in, to check that the MDM that enrolled the device belongs to the
account's organization (ABM's "restrict sign-in to managed devices"). A JWT (RFC 7519) with ``iss`` the server's
``server_uuid`` from ABM's AccountDetail, ``iat``, a single-use ``jti`` and ``service_type``, signed with the MDM
server's key (here ES256 with a P-256 key kept in the MDM's state dir; its public half is ``public_pem``).
"""
from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from lab.pki import key_pem, load_ec_key, write_private
from lab.protocol import MAID_TOKEN_SERVICE

SERVICE_TYPE = MAID_TOKEN_SERVICE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class MAIDSigner:
    def __init__(self, directory: Path):
        path = Path(directory) / "maid-signer.key"
        if path.exists():
            self.key = load_ec_key(path)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            write_private(path, key_pem(self.key))

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, server_uuid: str, now: float) -> str:
        header = {"alg": "ES256", "typ": "JWT"}
        claims = {"iss": server_uuid, "iat": int(now), "jti": str(uuid.uuid4()), "service_type": SERVICE_TYPE}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
