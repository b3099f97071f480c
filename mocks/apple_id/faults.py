"""Faults of Apple's identity service: what a device meets when Apple's side, not the organization, fails.

Each record's hook returns the answer the service gives instead of judging the sign-in."""
from lab.faults import FaultRegistry

COMPONENT = "apple-id"
fault = FaultRegistry(COMPONENT)


@fault("maa-service-unavailable", at="sign-in",
       description="Apple's identity service answers 503 to the Managed Apple Account sign-in",
       symptom="'Could not communicate with the server' after the profile installed: an Apple outage, or a network "
               "that blocks Apple's identity hosts; the device removes the enrollment it just made")
def _unavailable() -> tuple[int, dict]:
    return 503, {"error": "service-unavailable",
                 "alert": {"title": "Sign-in Failed", "message": "Could not communicate with the server."}}


FAULTS = fault.specs
