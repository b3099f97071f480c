"""The organization's web server: serves /.well-known/com.apple.remotemanagement for each of its domains."""
from mocks.org_domain.app import create_app
from mocks.org_domain.state import DomainSetup, OrgDomainState

__all__ = ["create_app", "DomainSetup", "OrgDomainState"]
