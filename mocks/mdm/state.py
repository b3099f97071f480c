"""The MDM (PROTOCOL.md stages 2-4): one store and one token table shared by its parts (signin.py: challenge,
web sign-in, token endpoint; profiles.py: what the device installs; checkin.py: check-in and the command poll),
plus the console's controls (queue, revoke, expire, token lifetime, push), its views, and its registration with ABM.

Handlers in routes.py parse the request, call one method here and render what it returns.
"""
from __future__ import annotations

import base64
import time
from pathlib import Path

from lab.events import Event
from lab.protocol import MODEL_FAMILIES, discovery_server
from lab.store import Store
from mocks.mdm import validation
from mocks.mdm.abm_client import DEPClient, RegistrationError
from mocks.mdm.checkin import Channel
from mocks.mdm.commands import SCHEMA as COMMANDS_SCHEMA
from mocks.mdm.commands import CommandQueue
from mocks.mdm.errors import (
    BadDiscoveryRequest,
    BadEnrollmentRequest,
    CommandRefused,
    EnrollmentRefused,
    UnknownEnrollment,
    WellKnownFailed,
)
from mocks.mdm.faults import Taps
from mocks.mdm.identity import IdentityCA
from mocks.mdm.maid import MAIDSigner
from mocks.mdm.profiles import Profiles, parse_enrollment_body
from mocks.mdm.setup import MDMSetup
from mocks.mdm.signin import AUTH_METHODS, SignIn
from mocks.mdm.tokens import SCHEMA as TOKENS_SCHEMA
from mocks.mdm.tokens import TokenInfo, Tokens, bearer_of

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    identifier TEXT PRIMARY KEY, full_name TEXT NOT NULL, salt BLOB NOT NULL, password_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
    enrollment_id TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, topic TEXT NOT NULL,
    status TEXT NOT NULL, push_token BLOB, push_magic TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    enrollment_user_id TEXT, last_seen REAL, product TEXT, os_version TEXT
);
CREATE TABLE IF NOT EXISTS profiles (
    profile_uuid TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, identity_serial TEXT NOT NULL,
    created REAL NOT NULL
)
""" + ";" + TOKENS_SCHEMA + ";" + COMMANDS_SCHEMA


def family_of(product: str) -> str | None:
    """The model family of a PRODUCT such as iPhone17,2, iPad16,3, Mac16,1 or RealityDevice14,1."""
    return next((f for f in MODEL_FAMILIES if product.startswith(f)), None)


class MDMState:
    def __init__(self, setup: MDMSetup, directory: Path, profile_signer, *, clock=time.time, faults=None):
        if setup.auth not in AUTH_METHODS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_METHODS)}, got {setup.auth!r}")
        self.setup, self.directory, self.clock, self.faults = setup, Path(directory), clock, faults
        self.store = Store(self.directory / "mdm.db", _SCHEMA)
        self._migrate()
        self.tokens = Tokens(self.store, clock)
        self.commands = CommandQueue(self.store, clock)
        self.identity_ca = IdentityCA(self.directory, setup.organization)
        taps = Taps(faults, setup.host)
        self.signin = SignIn(setup, self.store, self.tokens, taps, clock)
        self.profiles = Profiles(setup, self.store, self.identity_ca, profile_signer, taps, clock)
        self.channel = Channel(setup, self.store, self.tokens, self.signin, self.commands,
                               MAIDSigner(self.directory), clock)
        self.enrollment_profile_id = self.profiles.enrollment_profile_id
        self.signer = profile_signer  # lab.pki.Leaf

    def _migrate(self) -> None:
        """Older state dirs: columns added since, and the single ``tokens`` table of before OAuth 2 moved into
        grants."""
        with self.store.transaction() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            for table, added in (("enrollments", ("enrollment_user_id TEXT", "last_seen REAL", "product TEXT",
                                                  "os_version TEXT")),
                                 ("codes", ("grant_id TEXT",))):
                columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for column in added:
                    if column.split()[0] not in columns:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tokens'").fetchone():
                db.execute("INSERT OR IGNORE INTO grants SELECT 'legacy-' || substr(token_hash, 1, 16), user,"
                           " 'simple', created, revoked, enrollment_id, mode FROM tokens")
                db.execute("INSERT OR IGNORE INTO access_tokens SELECT token_hash, 'legacy-' ||"
                           " substr(token_hash, 1, 16), created, expires FROM tokens")
                db.execute("DROP TABLE tokens")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def token_ttl(self) -> int:
        return self.signin.token_ttl

    def enrollment(self, enrollment_id: str) -> dict | None:
        return self.channel.enrollment(enrollment_id)

    def enroll(self, authorization: str | None, body: bytes, content_type: str | None,
               mode: str = "BYOD") -> tuple[TokenInfo, dict, bytes]:
        """An enrollment request (PROTOCOL.md 2.1-2.5): the device's facts checked against this MDM's policy, then
        the token's user and the profile made for them (a 401 with the challenge while there is no token)."""
        media_type = (content_type or "").split(";")[0].strip().lower()
        if self.setup.parse_by_content_type and media_type == "application/x-www-form-urlencoded":
            raise BadEnrollmentRequest(
                "the enrollment request was parsed as a form because its Content-Type is "
                "application/x-www-form-urlencoded (iOS 15's label for its signed request); a server must read "
                "the body whatever its label (PROTOCOL.md 2.1, 6.7)", code="body-parsed-as-form")
        info = parse_enrollment_body(body)
        validation.check_enrollment_request(info, mode, self.setup.schema_check)
        family = family_of(info["PRODUCT"])
        if family in self.setup.refused_families:
            raise EnrollmentRefused(f"this MDM does not enroll {family} devices ({info['PRODUCT']})",
                                    code="device-type-refused")
        if mode == "BYOD" and not self.setup.personal_devices:
            raise EnrollmentRefused("this MDM does not enroll personal devices (User Enrollment)",
                                    code="personal-devices-refused")
        token = self.signin.check_token(authorization, esso=True)
        profile = self.profiles.enrollment_profile(token.user, mode)
        bearer = bearer_of(authorization)
        assert bearer is not None  # check_token accepted it
        self.tokens.set_mode(bearer, mode)
        return token, info, profile

    def service_discovery(self, identifier: str | None, model_family: str | None) -> dict:
        """The well-known document this MDM serves at its registered discovery URL (PROTOCOL.md 1.7-1.8)."""
        if not identifier or identifier.count("@") != 1:
            raise BadDiscoveryRequest("user-identifier is missing or malformed; the discovery URL routes by user",
                                      code="malformed-identifier")
        s = self.setup
        server = discovery_server(identifier, model_family, version=s.version, versions=s.versions,
                                  base_url=s.base_url, adde_base_url=s.adde_base_url)
        if model_family in s.refused_families:
            raise WellKnownFailed(f"this MDM does not enroll {model_family} devices",
                                  user_message=f"{s.organization} does not manage this kind of device.")
        if server["Version"] == "mdm-byod" and not s.personal_devices:
            raise WellKnownFailed("this MDM does not enroll personal devices (User Enrollment, mdm-byod)",
                                  user_message=f"{s.organization} manages only devices it owns.")
        return {"Servers": [server]}

    def maid_public_key(self) -> str:
        """The public key the admin uploads to ABM/ASM with this MDM's server: it verifies the com.apple.maid
        tokens this MDM signs (GetToken)."""
        return self.channel.maid.public_pem.decode()

    def register_with_abm(self, origin: str, token: dict, session, url: str | None = None, events=None) -> None:
        """Register this MDM's discovery URL (or ``url``, to reproduce an MDM that registers the wrong one) with
        ABM's Device Assignment API at ``origin``, with the server token an admin downloaded from ABM (PROTOCOL.md
        1.8). When ABM refuses: RegistrationError, or with ``events`` (a lab.events.EventLog) the MDM keeps running,
        as in the field, and the refusal is an event."""
        client = DEPClient(origin, token, session)
        try:
            client.register_discovery_url(url or self.setup.discovery_url)
        except RegistrationError as exc:
            if events is None:
                raise
            events.record(Event(component="mdm", kind="lab", outcome="registration-failed",
                                summary=f"the MDM could not register its service-discovery URL with ABM: {exc}"))
            return
        self.channel.server_uuid = client.account()["server_uuid"]  # the iss of its com.apple.maid tokens

    # -- console controls --------------------------------------------------------------------------------------
    def _live_enrollment(self, enrollment_id: str) -> dict:
        known = self.enrollment(enrollment_id)
        if known is None:
            raise UnknownEnrollment(f"no enrollment {enrollment_id}")
        if known["status"] == "checked-out":
            raise CommandRefused(f"enrollment {enrollment_id} checked out", code="enrollment-checked-out")
        return known

    def queue_command(self, enrollment_id: str, request_type: str, params: dict | None = None) -> str:
        """Queue a command; InstallProfile without Payload gets a sample profile (params ``Profile``: wifi, mail,
        calendar), a Payload given as a base64 string is decoded."""
        known = self._live_enrollment(enrollment_id)
        if not isinstance(request_type, str) or not request_type.isalnum():
            raise CommandRefused(f"RequestType {request_type!r} is not a command name", code="bad-request-type")
        command = {"RequestType": request_type, **(params or {})}
        if request_type == "InstallProfile":
            kind = command.pop("Profile", "wifi")
            if isinstance(command.get("Payload"), str):
                try:
                    command["Payload"] = base64.b64decode(command["Payload"], validate=True)
                except ValueError:
                    raise CommandRefused("Payload must be base64 when given as a string",
                                         code="bad-payload") from None
            if "Payload" not in command:
                try:
                    command["Payload"] = self.profiles.sample(kind, known["user"])
                except ValueError as exc:
                    raise CommandRefused(str(exc), code="bad-sample-profile") from None
        return self.commands.queue(enrollment_id, command)

    def unenroll(self, enrollment_id: str) -> str:
        """Unenrollment by the MDM: RemoveProfile for the enrollment profile (PROTOCOL.md 4.6)."""
        return self.queue_command(enrollment_id, "RemoveProfile", {"Identifier": self.enrollment_profile_id})

    def revoke_tokens(self, *, enrollment_id: str | None = None, user: str | None = None) -> int:
        if user is not None or enrollment_id is None:
            self.tokens.end_sessions(user)
        if enrollment_id is not None:
            known = self.enrollment(enrollment_id)
            if known is not None:
                self.tokens.end_sessions(known["user"])
        return self.tokens.revoke(enrollment_id=enrollment_id, user=user)

    def expire_tokens(self, *, enrollment_id: str | None = None, user: str | None = None) -> int:
        return self.tokens.expire(enrollment_id=enrollment_id, user=user)

    def set_token_ttl(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 366 * 86400:
            raise CommandRefused("the token lifetime must be a whole number of seconds from 1 to a year",
                                 code="bad-token-lifetime")
        self.signin.token_ttl = seconds

    def push(self, enrollment_id: str) -> dict:
        """What an APNs push would carry ({"mdm": PushMagic}); the lab has no APNs, the device polls on 'sync'."""
        known = self._live_enrollment(enrollment_id)
        if not known["push_magic"]:
            raise CommandRefused(f"enrollment {enrollment_id} sent no TokenUpdate yet", code="no-push-token")
        return {"topic": known["topic"], "payload": {"mdm": known["push_magic"]}}

    # -- views -------------------------------------------------------------------------------------------------
    def enrollments(self) -> list[dict]:
        return [dict(r) for r in self.store.query(
            "SELECT enrollment_id, user, mode, status, enrollment_user_id, created, updated, last_seen"
            " FROM enrollments ORDER BY created")]

    def snapshot(self) -> dict:
        return {
            "auth": {"method": AUTH_METHODS[self.setup.auth], "token_ttl": self.token_ttl,
                     "refresh_tokens": self.setup.refresh_tokens, "federated": bool(self.setup.idp_origin),
                     "esso": self.setup.esso},
            "users": [dict(r) for r in self.store.query("SELECT identifier, full_name FROM users")],
            "enrollments": self.enrollments(),
            "tokens": self.tokens.snapshot(),
            "commands": self.commands.listing(results=False),
        }

    def close(self) -> None:
        self.store.close()
