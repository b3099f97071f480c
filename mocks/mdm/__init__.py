"""The MDM server: enrollment endpoint with the Bearer challenge, simple and OAuth 2 sign-in (optionally federated
to the organization's IdP), Enrollment SSO, profile, check-in, command queue."""
from mocks.mdm.app import create_app, urls
from mocks.mdm.faults import FAULTS
from mocks.mdm.idp import IdPState, create_idp_app
from mocks.mdm.state import MDMSetup, MDMState

__all__ = ["create_app", "urls", "FAULTS", "IdPState", "create_idp_app", "MDMSetup", "MDMState",
           "scenario_options"]


def scenario_options(mdm) -> dict:
    """MDMSetup keyword arguments from a scenario's [mdm] table (lab.scenario.MDM)."""
    return {"auth": mdm.auth, "token_ttl": mdm.token_ttl, "refresh_tokens": mdm.refresh_tokens,
            "refresh_ttl": mdm.refresh_ttl, "code_ttl": mdm.code_ttl, "client_id": mdm.client_id,
            "scope": mdm.scope or None, "esso": mdm.esso}
