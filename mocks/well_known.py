"""The query a device sends for its enrollment service (PROTOCOL.md stage 1): ``user-identifier`` and
``model-family``, checked the same way by the organization's well-known resource (``mocks.org_domain``) and by
Apple's fallback (``mocks.abm``), and by the ABM admin for the accounts and device types it manages."""
from __future__ import annotations

from lab.flaskapp import LabError
from lab.protocol import MODEL_FAMILIES


class MalformedIdentifier(LabError):
    status = 400
    code = "malformed-identifier"


class UnknownModelFamily(LabError):
    status = 400
    code = "unknown-model-family"


def identifier_parts(identifier: str | None, *, normalise: bool = False) -> tuple[str, str]:
    """(local part, domain) of a ``name@domain.tld`` identifier, lower-cased and stripped when ``normalise``;
    MalformedIdentifier otherwise."""
    if not identifier:
        raise MalformedIdentifier("the user-identifier query parameter is missing")
    local, _, domain = (identifier.strip().lower() if normalise else identifier).rpartition("@")
    if identifier.count("@") != 1 or not local or "." not in domain or domain.startswith(".") \
            or domain.endswith("."):
        raise MalformedIdentifier(f"user-identifier {identifier!r} is not of the form name@domain.tld")
    return local, domain


def check_model_family(model_family: str | None, *, required: bool) -> None:
    """UnknownModelFamily unless ``model-family`` is one Apple defines (or absent, when it is optional)."""
    if model_family is None and not required:
        return
    if model_family not in MODEL_FAMILIES:
        raise UnknownModelFamily("the model-family query parameter is missing" if required and not model_family
                                 else f"model-family {model_family!r} is not one of {', '.join(MODEL_FAMILIES)}")
