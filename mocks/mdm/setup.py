"""What an MDM is, as the launcher builds it from a scenario: its organization, host and URLs, how it signs users
in, its tokens, and its policy and manners (PROTOCOL.md stages 2-4; the README's MDM section lists the settings)."""
from __future__ import annotations

from dataclasses import dataclass, field

from mocks.mdm.profiles import ESSO_APP_ID
from mocks.mdm.signin import DEFAULT_CLIENT_ID, REDIRECT_URL


@dataclass(frozen=True)
class MDMSetup:
    organization: str
    host: str
    base_url: str
    auth_url: str
    server_url: str
    checkin_url: str
    topic: str
    token_ttl: int
    users: tuple  # of lab.scenario.User
    discovery_url: str = ""
    adde_base_url: str = ""
    version: str = "mdm-byod"
    versions: dict = field(default_factory=dict)  # model family or user identifier → Version
    auth: str = "simple"  # "simple" (apple-as-web) or "oauth2" (apple-oauth2): which method the challenge names
    authorize_url: str = ""
    token_url: str = ""
    federated_callback_url: str = ""
    esso_url: str = ""
    client_id: str = DEFAULT_CLIENT_ID
    scope: str | None = "mdm"  # None: the challenge leaves scope out (the RE'd client then sends none)
    redirect_url: str = REDIRECT_URL
    refresh_tokens: bool = True  # OAuth 2: issue refresh tokens
    refresh_ttl: int = 30 * 86400
    code_ttl: int = 60  # authorization codes are single-use and short-lived
    pkce_methods: tuple = ("S256",)  # RFC 7636 4.2: plain only where a scenario allows it
    callback_status: int = 308  # the sign-in's callback redirect (Apple: 308; a real device also takes 303)
    challenge_separator: str = ", "  # Apple writes ", "; Fleet and Zentral a space (PROTOCOL.md 6.12)
    parse_by_content_type: bool = False  # the enrollment request is parsed by its Content-Type (PROTOCOL.md 6.7)
    refused_families: tuple = ()  # model families this MDM does not enroll
    personal_devices: bool = True  # False: no User Enrollment (mdm-byod), only organization-owned devices
    schema_check: str = "strict"  # what the device sends, against Apple's schema: strict (400), warn or off
    maid_tokens: bool = True  # advertise com.apple.mdm.token and answer GetToken for com.apple.maid
    idp_origin: str = ""  # set: sign-in is federated to the organization's IdP at this origin
    federation_secret: bytes = b""
    esso: bool = False  # the 401 of the enrollment request carries X-Apple-MDM-ESSO
    esso_app_id: int = ESSO_APP_ID
