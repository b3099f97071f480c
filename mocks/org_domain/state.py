"""Rules of the org domain: which well-known answer each domain gives (PROTOCOL.md stage 1.2-1.4)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from mocks.org_domain.errors import MalformedIdentifier, UnknownDomain, UnknownModelFamily

MODEL_FAMILIES = ("AppleTV", "iPad", "iPhone", "Mac", "RealityDevice", "Watch")
WELL_KNOWN_PATH = "/.well-known/com.apple.remotemanagement"


@dataclass(frozen=True)
class DomainSetup:
    name: str
    version: str
    base_url: str


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    summary: str


def check_identifier(identifier: str | None) -> str:
    if not identifier:
        raise MalformedIdentifier("the user-identifier query parameter is missing")
    local, at, domain = identifier.rpartition("@")
    if identifier.count("@") != 1 or not local or "." not in domain or domain.startswith(".") \
            or domain.endswith("."):
        raise MalformedIdentifier(f"user-identifier {identifier!r} is not of the form name@domain.tld")
    return identifier


class OrgDomainState:
    def __init__(self, domains: list[DomainSetup]):
        self.domains = {d.name: d for d in domains}

    def reset(self) -> None:
        self.__init__(list(self.domains.values()))

    def well_known(self, host: str, identifier: str | None, model_family: str | None) -> Answer:
        setup = self.domains.get(host)
        if setup is None:
            raise UnknownDomain(f"{host} is not one of the organization's domains")
        check_identifier(identifier)
        if model_family is not None and model_family not in MODEL_FAMILIES:
            raise UnknownModelFamily(f"model-family {model_family!r} is not one of {', '.join(MODEL_FAMILIES)}")
        document = {"Servers": [{"Version": setup.version, "BaseURL": setup.base_url}]}
        return Answer(200, "application/json", json.dumps(document).encode(),
                      f"{setup.version} → {setup.base_url}")

    def snapshot(self) -> dict:
        return {name: {"version": d.version, "base_url": d.base_url} for name, d in self.domains.items()}
