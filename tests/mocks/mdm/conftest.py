"""Fixtures of the MDM's module tests: a profile signer, and an MDM (simple sign-in, a fixed clock) with its client."""
import pytest

from lab.pki import CertificateAuthority
from tests.mdm_support import Clock, client_of, make_state


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"]).issue_profile_signer("BetterBag")


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
