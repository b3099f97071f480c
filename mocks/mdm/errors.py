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
    """The authorization request cannot be answered by redirecting (unknown client or redirect URI:
    RFC 6749 4.1.2.1)."""
    status = 400
    code = "bad-authorization-request"


class AppleError(LabError):
    """One of Apple's documented MDM error bodies (mdm/errors in Apple's schema): a 403 with JSON ``code``,
    ``description`` (logged by the device) and, when set, ``user_message`` as ``message`` (may be shown)."""
    status = 403

    def __init__(self, message: str, *, user_message: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.user_message = user_message


class UnrecognizedDevice(AppleError):
    """ErrorUnrecognizedDevice (iOS 17, macOS 14): the MDM no longer knows this enrollment (PROTOCOL.md 4.5)."""
    code = "com.apple.unrecognized.device"


class WellKnownFailed(AppleError):
    """ErrorWellKnownFailed (iOS 17.5, macOS 14.5): the MDM refuses a service-discovery request (PROTOCOL.md 1.5)."""
    code = "com.apple.well-known.failed"


class EnrollmentRefused(LabError):
    """The MDM's policy refuses this device at the enrollment request (Apple documents no body for this step)."""
    status = 403
    code = "enrollment-refused"


class BadReport(LabError):
    status = 400
    code = "bad-command-report"


class CommandRefused(LabError):
    status = 409
    code = "command-refused"


class ServiceUnavailable(LabError):
    status = 503
    code = "temporarily_unavailable"
