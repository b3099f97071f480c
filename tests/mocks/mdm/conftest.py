"""Fixtures of every MDM test that uses Flask's test client (tests/mocks/mdm/): the lab CA and a profile signer, a
controllable clock, and an MDM (simple sign-in) with its client. Helpers and constants: tests/mdm_support.py."""
import pytest

from lab.pki import CertificateAuthority
from tests.mdm_support import Clock, client_of, make_state


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


@pytest.fixture(scope="module")
def signer(pki):
    return pki.issue_profile_signer("BetterBag")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def state(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "mdm", signer, clock)
    yield mdm
    mdm.close()


@pytest.fixture
def client(state):
    return client_of(state)
