"""Errors of the identity service's own API (a sign-in that Apple refuses is an answer, not an error)."""
from lab.flaskapp import LabError


class BadSignInRequest(LabError):
    status = 400
    code = "bad-sign-in-request"
