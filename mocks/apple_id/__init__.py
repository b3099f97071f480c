"""Apple's identity service for Managed Apple Accounts (lab stand-in for gsa.apple.com / idmsa.apple.com): the
sign-in that completes an account-driven enrollment once the enrollment profile has installed."""
from mocks.apple_id.app import create_app
from mocks.apple_id.faults import FAULTS
from mocks.apple_id.state import (
    ALLOW_ON,
    CLIENT_ID,
    FEDERATED_CALLBACK_PATH,
    AccountRecord,
    AppleIDSetup,
    AppleIDState,
    Directory,
    ServerRecord,
    UsersDirectory,
    maid_claims,
)

__all__ = ["ALLOW_ON", "CLIENT_ID", "FEDERATED_CALLBACK_PATH", "AccountRecord", "AppleIDSetup", "AppleIDState",
           "Directory", "FAULTS", "ServerRecord", "UsersDirectory", "create_app", "maid_claims"]
