"""Errors of the org domain mock (those of the device's query itself: ``mocks.well_known``)."""
from lab.flaskapp import LabError


class UnknownDomain(LabError):
    status = 404
    code = "unknown-domain"


class NoSuchPath(LabError):
    status = 404
    code = "no-such-path"
