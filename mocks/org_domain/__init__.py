"""The organization's web server: serves /.well-known/com.apple.remotemanagement for each of its domains."""
from mocks.org_domain.app import create_app
from mocks.org_domain.faults import FAULTS
from mocks.org_domain.state import WELL_KNOWN_PATH, DomainSetup, Hop, OrgDomainState

__all__ = ["create_app", "DomainSetup", "FAULTS", "Hop", "OrgDomainState", "WELL_KNOWN_PATH"]
