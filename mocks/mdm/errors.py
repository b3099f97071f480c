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


class OAuthError(LabError):
    """An error of the token endpoint, in RFC 6749 5.2 form: ``error`` and ``error_description``."""
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message, code=code, status=status, headers={"Cache-Control": "no-store"},
                         error_description=message)


class BadAuthorizationRequest(LabError):
    """The authorization request cannot be answered by redirecting (unknown client or redirect URI: RFC 6749 4.1.2.1)."""
    status = 400
    code = "bad-authorization-request"


class UnrecognizedDevice(LabError):
    """ErrorUnrecognizedDevice (iOS 17, macOS 14): the MDM no longer knows this enrollment (PROTOCOL.md 4.5)."""
    status = 403
    code = "com.apple.unrecognized.device"  # rendered as {"code": ..., "description": ...} by the MDM's app


class BadReport(LabError):
    status = 400
    code = "bad-command-report"


class CommandRefused(LabError):
    status = 409
    code = "command-refused"


class ServiceUnavailable(LabError):
    status = 503
    code = "temporarily_unavailable"
