"""Errors of the ABM/ASM mock.

Device-facing and admin errors are LabErrors rendered as JSON (admin: as an HTML page). The Device Assignment API
answers like Apple's: a plain-text code (PROTOCOL.md 1.8, lab choice), so its errors are ``APIError``s. Those of the
device's query itself are in ``mocks.well_known``.
"""
from lab.flaskapp import LabError


class FallbackRefused(LabError):
    """404 with the reason the fallback cannot send the device on (PROTOCOL.md 1.7)."""
    status = 404

    def __init__(self, reason: str, message: str):
        super().__init__(message, code=reason, reason=reason)
        self.reason = reason


class BadAdminInput(LabError):
    status = 400
    code = "bad-input"


class APIError(LabError):
    """A Device Assignment API error; the body is just the code, e.g. ``UNAUTHORIZED``."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message, code=code, status=status)


def unauthorized(message: str) -> APIError:
    return APIError("UNAUTHORIZED", message, 401)
