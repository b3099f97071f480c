"""ABM's faults: what Apple's side can answer that the MDM must cope with (PROTOCOL.md 1.8).

Each record's hook returns the error the Device Assignment API answers instead (``at`` names the calls it hits);
the state words its message through the board, which names the fault unless it is concealed.
"""
from lab.faults import FaultRegistry
from mocks.abm.errors import APIError

COMPONENT = "abm"
fault = FaultRegistry(COMPONENT)


@fault("org-not-supported", at="adde-profile",
       description="the Device Assignment API answers 400 ORG_NOT_SUPPORTED to every account-driven enrollment "
                   "profile call (arm it on the API host), and while it is armed Apple's fallback sends none of the "
                   "organization's devices on",
       symptom="the MDM cannot register its service discovery URL: the organization is not enabled for "
               "account-driven enrollment in ABM/ASM, so the fallback has nowhere to send devices")
def _org_not_supported() -> APIError:
    return APIError("ORG_NOT_SUPPORTED", "the organization is not enabled for account-driven enrollment")


FAULTS = fault.specs
