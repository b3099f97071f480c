"""ABM/ASM's side of the Managed Apple Account sign-in: accounts, aliases, other organizations, the setting and
the MDM servers' keys, read from ABM's own database."""
import pytest

from lab.scenario import ABMServer
from mocks.abm.directory import ABMDirectory, DirectorySetup, OtherOrganization
from mocks.abm.state import ABMSetup, ABMState

HOSTS = {"fallback": "axm-adm-enroll.lab.test", "api": "mdmenrollment.lab.test", "admin": "business.lab.test"}


@pytest.fixture()
def abm(tmp_path):
    setup = ABMSetup(organization="BetterBag", kind="business", domains=("betterbag.test",),
                     accounts=("eliza@betterbag.test",), servers=(ABMServer("Lab MDM", ("iPhone",), True),),
                     session_ttl=600, hosts=HOSTS)
    state = ABMState(setup, tmp_path, lambda name: [])
    yield state
    state.close()


def directory(abm, **kw):
    return ABMDirectory(abm, DirectorySetup(**kw))


def test_accounts_aliases_and_other_organizations(abm):
    d = directory(abm, aliases={"E.Bagshaw@betterbag.test": "eliza@betterbag.test", "x@betterbag.test": "gone@b.t"},
                  other_organizations=(OtherOrganization("BetterBag Europe", ("jo@betterbag-eu.test",)),))
    assert d.account_record("Eliza@BetterBag.test")["organization"] == "BetterBag"
    assert d.account_record("jo@betterbag-eu.test")["organization"] == "BetterBag Europe"
    assert d.account_record("nobody@betterbag.test") is None
    assert d.alias_owner("e.bagshaw@betterbag.test") == "eliza@betterbag.test"
    assert d.alias_owner("x@betterbag.test") is None  # an alias of an account that does not exist reaches nobody
    abm.remove_account("eliza@betterbag.test")
    assert d.account_record("eliza@betterbag.test") is None  # the admin's change counts at the next sign-in


def test_the_setting_persists_and_refuses_unknown_values(abm, tmp_path):
    d = directory(abm, maa_allowed_on="managed",
                  other_organizations=(OtherOrganization("EU", (), maa_allowed_on="supervised"),))
    assert d.maa_allowed_on("BetterBag") == "managed" and d.maa_allowed_on("Someone Else") == "any"
    assert d.maa_allowed_on("EU") == "supervised"
    d.set_maa_allowed_on("supervised")
    assert directory(abm, maa_allowed_on="managed").maa_allowed_on("BetterBag") == "supervised"  # kept on resume
    with pytest.raises(ValueError, match="one of any, managed, supervised"):
        d.set_maa_allowed_on("everyone")
    with pytest.raises(ValueError):
        directory(abm, maa_allowed_on="sometimes")


def test_server_records_carry_the_uploaded_key(abm):
    d = directory(abm, other_organizations=(OtherOrganization("EU", (), (("EU MDM", "uuid-eu"),)),))
    server_uuid = abm.snapshot()["servers"][0]["server_uuid"]
    assert d.server_record(server_uuid)["public_key_pem"] is None
    d.register_server_key("Lab MDM", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert "BEGIN PUBLIC KEY" in d.server_record(server_uuid)["public_key_pem"]
    assert d.server_record("uuid-eu")["organization"] == "EU"
    assert d.server_record("nope") is None
    with pytest.raises(ValueError):
        d.register_server_key("Lab MDM", "not a key")
