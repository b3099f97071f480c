"""mocks/mdm/state.py, the facade: service discovery through lab.protocol's one rule."""
from __future__ import annotations

import pytest

from lab.pki import CertificateAuthority
from tests.mdm_support import URLS, Clock, make_state


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"]).issue_profile_signer("BetterBag")


def test_service_discovery_routes_by_user_then_family_and_falls_back_like_the_org_domain(tmp_path, signer):
    mdm = make_state(tmp_path / "a", signer, Clock(), versions={"Mac": "mdm-adde"})
    try:
        assert mdm.service_discovery("eliza@betterbag.test", "Mac")["Servers"] == [
            {"Version": "mdm-adde", "BaseURL": URLS["adde_base_url"]}]
    finally:
        mdm.close()
    mdm = make_state(tmp_path / "b", signer, Clock(), version="mdm-adde", adde_base_url="")
    try:  # before: an ADDE Version with an empty BaseURL, where the org domain answered the one base URL
        assert mdm.service_discovery("eliza@betterbag.test", "iPhone")["Servers"] == [
            {"Version": "mdm-adde", "BaseURL": URLS["base_url"]}]
    finally:
        mdm.close()
