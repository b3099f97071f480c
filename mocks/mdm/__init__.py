"""The MDM server: enrollment endpoint with the Bearer challenge, web sign-in, profile, check-in."""
from mocks.mdm.app import create_app, urls
from mocks.mdm.state import MDMSetup, MDMState

__all__ = ["create_app", "urls", "MDMSetup", "MDMState"]
