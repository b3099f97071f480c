"""Errors of the MDM mock."""
from lab.flaskapp import LabError


class BadEnrollmentRequest(LabError):
    status = 400
    code = "bad-enrollment-request"


class NotAuthorized(LabError):
    """401 with the same Bearer challenge as stage 2, so the device knows how to get a new token."""
    status = 401
    code = "token-required"


class TokenBoundElsewhere(LabError):
    status = 403
    code = "token-bound-to-other-enrollment"


class BadCheckIn(LabError):
    status = 400
    code = "bad-check-in"


class UnknownEnrollment(LabError):
    status = 404
    code = "unknown-enrollment"


class BadSignIn(LabError):
    status = 400
    code = "bad-sign-in"


class BadDiscoveryRequest(LabError):
    status = 400
    code = "bad-discovery-request"
