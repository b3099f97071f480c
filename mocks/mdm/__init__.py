"""The MDM server: enrollment endpoint with the Bearer challenge, simple and OAuth 2 sign-in (optionally federated
to the organization's IdP), Enrollment SSO, profile, check-in, command queue."""
from mocks.mdm.app import create_app, urls
from mocks.mdm.faults import FAULTS
from mocks.mdm.idp import IdPState, create_idp_app
from mocks.mdm.setup import MDMSetup
from mocks.mdm.signin import FEDERATION_CLIENT_ID
from mocks.mdm.state import MDMState

__all__ = ["create_app", "urls", "FAULTS", "FEDERATION_CLIENT_ID", "IdPState", "create_idp_app", "MDMSetup", "MDMState",
           "scenario_options"]


def scenario_options(mdm) -> dict:
    """MDMSetup keyword arguments from a scenario's [mdm] table (lab.scenario.MDM)."""
    return {"auth": mdm.auth, "token_ttl": mdm.token_ttl, "refresh_tokens": mdm.refresh_tokens,
            "refresh_ttl": mdm.refresh_ttl, "code_ttl": mdm.code_ttl, "client_id": mdm.client_id,
            "scope": mdm.scope or None, "esso": mdm.esso,
            "pkce_methods": ("S256", "plain") if mdm.pkce_plain else ("S256",), "callback_status": mdm.callback_status,
            "challenge_separator": " " if mdm.challenge_separator == "space" else ", ",
            "parse_by_content_type": mdm.parse_by_content_type, "refused_families": mdm.refuse_families,
            "personal_devices": mdm.personal_devices, "schema_check": mdm.schema_check,
            "maid_tokens": mdm.maid_tokens}
