"""Errors of the org domain mock."""
from lab.flaskapp import LabError


class MalformedIdentifier(LabError):
    status = 400
    code = "malformed-identifier"


class UnknownModelFamily(LabError):
    status = 400
    code = "unknown-model-family"


class UnknownDomain(LabError):
    status = 404
    code = "unknown-domain"


class NoSuchPath(LabError):
    status = 404
    code = "no-such-path"
