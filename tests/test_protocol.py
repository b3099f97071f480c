"""lab/protocol.py: which Version and BaseURL a well-known answer gives, one rule for the org domain and the MDM."""
from lab.protocol import discovery_server

BYOD, ADDE = "https://mdm.lab.test/enroll", "https://mdm.lab.test/enroll/adde"


def test_the_user_wins_over_the_model_family_over_the_default():
    versions = {"Mac": "mdm-adde", "ann@betterbag.test": "mdm-byod"}
    pick = lambda who, family: discovery_server(who, family, version="mdm-byod", versions=versions,  # noqa: E731
                                                base_url=BYOD, adde_base_url=ADDE)
    assert pick("ann@betterbag.test", "Mac") == {"Version": "mdm-byod", "BaseURL": BYOD}
    assert pick("eliza@betterbag.test", "Mac") == {"Version": "mdm-adde", "BaseURL": ADDE}
    assert pick("eliza@betterbag.test", None) == {"Version": "mdm-byod", "BaseURL": BYOD}


def test_device_enrollment_without_its_own_url_goes_to_the_one_base_url():
    assert discovery_server("eliza@betterbag.test", "iPhone", version="mdm-adde", versions={}, base_url=BYOD,
                            adde_base_url="") == {"Version": "mdm-adde", "BaseURL": BYOD}
