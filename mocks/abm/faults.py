"""ABM's faults: what Apple's side can answer that the MDM must cope with (PROTOCOL.md 1.8)."""
from lab.faults import FaultSpec

COMPONENT = "abm"

FAULTS = [
    FaultSpec("org-not-supported", COMPONENT,
              "the Device Assignment API answers 400 ORG_NOT_SUPPORTED to every account-driven enrollment "
              "profile call (arm it on the API host)",
              "the MDM cannot register its service discovery URL: the organization is not enabled for "
              "account-driven enrollment in ABM/ASM, so the fallback has nowhere to send devices"),
]
