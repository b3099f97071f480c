"""Rules of Apple Business/School Manager as the lab needs them (PROTOCOL.md 1.6-1.8).

The organization's domains (verified through a TXT record in the lab DNS), its Managed Apple Accounts, its MDM
servers with their server tokens, the default device assignment per device type, the Device Assignment API's
sessions and discovery URL, and the device-facing fallback that ties them together.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from lab import oauth1
from lab.pki import write_private
from lab.protocol import MODEL_FAMILIES
from lab.store import Store
from mocks.abm import faults as catalogue
from mocks.abm.errors import APIError, BadAdminInput, FallbackRefused, unauthorized
from mocks.well_known import UnknownModelFamily, check_model_family, identifier_parts

KINDS = {"business": "Apple Business Manager", "school": "Apple School Manager"}
VERIFICATION_PREFIX = "apple-domain-verification="
TOKEN_DAYS = 365  # a server token is valid for one year

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY, txt_value TEXT NOT NULL, verified INTEGER NOT NULL DEFAULT 0,
    checked REAL, check_result TEXT
);
CREATE TABLE IF NOT EXISTS accounts (identifier TEXT PRIMARY KEY, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY, server_uuid TEXT NOT NULL, lab_mdm INTEGER NOT NULL,
    consumer_key TEXT NOT NULL UNIQUE, consumer_secret TEXT NOT NULL,
    access_token TEXT NOT NULL UNIQUE, access_secret TEXT NOT NULL, token_expiry REAL NOT NULL,
    discovery_url TEXT, url_updated REAL
);
CREATE TABLE IF NOT EXISTS assignments (
    model_family TEXT PRIMARY KEY, server TEXT NOT NULL REFERENCES servers(name)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, server TEXT NOT NULL REFERENCES servers(name),
    created REAL NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    consumer_key TEXT NOT NULL, token TEXT NOT NULL, nonce TEXT NOT NULL, timestamp INTEGER NOT NULL,
    PRIMARY KEY (consumer_key, token, nonce)
)
"""


@dataclass(frozen=True)
class ABMSetup:
    organization: str
    kind: str                      # "business" (ABM) or "school" (ASM)
    domains: tuple[str, ...]       # all of the org's domains, verified or not
    accounts: tuple[str, ...]      # Managed Apple Accounts of the org
    servers: tuple                 # of lab.scenario.ABMServer(name, default_for, mdm)
    session_ttl: int               # seconds an X-ADM-Auth-Session stays valid
    hosts: dict                    # {"fallback": ..., "api": ..., "admin": ...}


def rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _random(prefix: str, length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def check_identifier(identifier: str | None) -> tuple[str, str]:
    """(identifier lower-cased, its domain) for name@domain.tld, else MalformedIdentifier."""
    local, domain = identifier_parts(identifier, normalise=True)
    return f"{local}@{domain}", domain


def check_discovery_url(body: bytes) -> str:
    """The URL of an AccountDrivenEnrollmentProfileRequest body, or the API error Apple names."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError("MALFORMED_REQUEST_BODY", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise APIError("MALFORMED_REQUEST_BODY", "the body must be a JSON object")
    url = document.get("mdm_service_discovery_url")
    if url is None or url == "":
        raise APIError("MDM_SERVICE_DISCOVERY_URL_REQUIRED", "mdm_service_discovery_url is missing")
    problem = "it is not a string" if not isinstance(url, str) else _url_problem(url)
    if problem:
        raise APIError("MDM_SERVICE_DISCOVERY_URL_NOT_VALID", f"mdm_service_discovery_url: {problem}")
    return url


def _url_problem(url: str) -> str | None:
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return "it is not a URL"
    if parts.scheme != "https":
        return "it must be an https URL"
    if not parts.hostname:
        return "it has no host"
    if parts.fragment:
        return "it must not carry a #fragment"
    return None


def with_query(url: str, identifier: str, model_family: str) -> str:
    """``url`` with user-identifier and model-family appended to whatever query it already has; '@' stays."""
    parts = urlsplit(url)
    extra = urlencode({"user-identifier": identifier, "model-family": model_family}, safe="@")
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


class ABMState:
    def __init__(self, setup: ABMSetup, directory: Path, txt_lookup: Callable[[str], list[str]], *,
                 clock=time.time, faults=None):
        if setup.kind not in KINDS:
            raise ValueError(f"ABM kind must be one of {', '.join(KINDS)}, got {setup.kind!r}")
        self.setup = setup
        self.directory = Path(directory)
        self.txt_lookup = txt_lookup
        self.clock = clock
        self.faults = faults  # lab.faults.FaultBoard, or None
        self._defaults = self._default_assignments(setup.servers)
        path = self.directory / "abm.db"
        if not path.exists():
            write_private(path, b"")  # server token secrets live in here; SQLite gives its WAL the same mode
        os.chmod(path, 0o600)
        self.store = Store(path, _SCHEMA)
        self._seed()

    @staticmethod
    def _default_assignments(servers) -> dict[str, str]:
        defaults: dict[str, str] = {}
        for server in servers:
            for family in server.default_for:
                if family not in MODEL_FAMILIES:
                    raise ValueError(f"ABM server {server.name!r}: unknown model family {family!r}")
                if family in defaults:
                    raise ValueError(f"ABM servers {defaults[family]!r} and {server.name!r} are both the "
                                     f"default for {family}")
                defaults[family] = server.name
        return defaults

    def _seed(self) -> None:
        """Create what the scenario describes once; later starts keep what the admin changed."""
        now = self.clock()
        with self.store.transaction() as db:
            org_id = str(1_000_000 + secrets.randbelow(9_000_000))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('org_id', ?)", (org_id,))
            for name in self.setup.domains:
                db.execute("INSERT OR IGNORE INTO domains (name, txt_value) VALUES (?, ?)",
                           (name.lower().rstrip("."), _random(VERIFICATION_PREFIX)))
            for server in self.setup.servers:
                db.execute("INSERT OR IGNORE INTO servers (name, server_uuid, lab_mdm, consumer_key, consumer_secret,"
                           " access_token, access_secret, token_expiry) VALUES (?,?,?,?,?,?,?,?)",
                           (server.name, str(uuid.uuid4()), int(server.mdm), _random("CK_", 40), _random("CS_", 40),
                            _random("AT_", 64), _random("AS_", 40), now + TOKEN_DAYS * 86400))
            if db.execute("SELECT 1 FROM meta WHERE key = 'seeded'").fetchone():
                return
            for account in self.setup.accounts:
                db.execute("INSERT OR IGNORE INTO accounts VALUES (?, ?)", (account.lower(), now))
            for family, server in self._defaults.items():
                db.execute("INSERT INTO assignments VALUES (?, ?)", (family, server))
            db.execute("INSERT INTO meta VALUES ('seeded', '1')")

    # -- domains -------------------------------------------------------------------------------------------
    def _domain(self, domain: str):
        row = self.store.one("SELECT * FROM domains WHERE name = ?", ((domain or "").lower().rstrip("."),))
        if row is None:
            raise BadAdminInput(f"{domain!r} is not a domain of {self.setup.organization}", code="unknown-domain")
        return row

    def verification_record(self, domain: str) -> str:
        return self._domain(domain)["txt_value"]

    def verify_domain(self, domain: str) -> bool:
        """Look the TXT record up in the lab DNS now; the domain is verified exactly while the value is there."""
        row = self._domain(domain)
        try:
            records = list(self.txt_lookup(row["name"]))
        except Exception as exc:  # any DNS failure (timeout, SERVFAIL, refused) means "not found", as in ABM
            records, result = [], f"DNS lookup failed: {exc}"
        else:
            result = f"TXT record not found among {len(records)} TXT record(s)"
        found = any(r.strip().strip('"') == row["txt_value"] for r in records)
        with self.store.transaction() as db:
            db.execute("UPDATE domains SET verified = ?, checked = ?, check_result = ? WHERE name = ?",
                       (int(found), self.clock(), "verified" if found else result, row["name"]))
        return found

    # -- Managed Apple Accounts ----------------------------------------------------------------------------
    def accounts(self) -> list[str]:
        return [r["identifier"] for r in self.store.query("SELECT identifier FROM accounts ORDER BY identifier")]

    def add_account(self, identifier: str) -> str:
        account, domain = check_identifier(identifier)
        if domain not in {r["name"] for r in self.store.query("SELECT name FROM domains")}:
            raise BadAdminInput(f"{domain} is not a domain of {self.setup.organization}", code="foreign-domain")
        with self.store.transaction() as db:
            if db.execute("INSERT OR IGNORE INTO accounts VALUES (?, ?)", (account, self.clock())).rowcount == 0:
                raise BadAdminInput(f"{account} is already a Managed Apple Account", code="account-exists")
        return account

    def remove_account(self, identifier: str) -> str:
        account = (identifier or "").strip().lower()
        with self.store.transaction() as db:
            if db.execute("DELETE FROM accounts WHERE identifier = ?", (account,)).rowcount == 0:
                raise BadAdminInput(f"{identifier!r} is not a Managed Apple Account of this organization",
                                    code="unknown-account")
        return account

    # -- MDM servers and default device assignment ---------------------------------------------------------
    def _server(self, name: str):
        row = self.store.one("SELECT * FROM servers WHERE name = ?", (name,))
        if row is None:
            raise BadAdminInput(f"{name!r} is not an MDM server of this organization", code="unknown-server")
        return row

    def server_token(self, server_name: str) -> dict:
        row = self._server(server_name)
        return {"consumer_key": row["consumer_key"], "consumer_secret": row["consumer_secret"],
                "access_token": row["access_token"], "access_secret": row["access_secret"],
                "access_token_expiry": rfc3339(row["token_expiry"])}

    def default_assignments(self) -> dict[str, str | None]:
        rows: dict[str, str] = {r["model_family"]: r["server"] for r in self.store.query(
            "SELECT model_family, server FROM assignments")}
        return {family: rows.get(family) for family in MODEL_FAMILIES}

    def set_default_assignments(self, choices: dict[str, str | None]) -> None:
        """Point each given device type at a server (None: no default); all or nothing."""
        if not choices:
            raise BadAdminInput("no device type was given", code="nothing-to-save")
        names = {r["name"] for r in self.store.query("SELECT name FROM servers")}
        for family, server in choices.items():
            if family not in MODEL_FAMILIES:
                raise UnknownModelFamily(f"{family!r} is not one of {', '.join(MODEL_FAMILIES)}")
            if server is not None and server not in names:
                raise BadAdminInput(f"{server!r} is not an MDM server of this organization", code="unknown-server")
        with self.store.transaction() as db:
            for family, server in choices.items():
                db.execute("DELETE FROM assignments WHERE model_family = ?", (family,))
                if server is not None:
                    db.execute("INSERT INTO assignments VALUES (?, ?)", (family, server))

    # -- Device Assignment API -----------------------------------------------------------------------------
    def _token_secrets(self, consumer_key: str, token: str) -> tuple[str, str] | None:
        row = self.store.one("SELECT consumer_secret, access_secret FROM servers"
                             " WHERE consumer_key = ? AND access_token = ?", (consumer_key, token))
        return (row["consumer_secret"], row["access_secret"]) if row else None

    def _seen_nonce(self, consumer_key: str, token: str, nonce: str, timestamp: int) -> bool:
        with self.store.transaction() as db:
            # a request older than the skew window is refused anyway, so its nonce need not be remembered
            db.execute("DELETE FROM nonces WHERE timestamp < ?", (self.clock() - oauth1.MAX_SKEW - 1,))
            return db.execute("INSERT OR IGNORE INTO nonces VALUES (?,?,?,?)",
                              (consumer_key, token, nonce, timestamp)).rowcount == 0

    def open_session(self, authorization: str | None, method: str, url: str) -> tuple[str, str]:
        """(auth_session_token, server name) for a correctly signed ``GET /session``."""
        now = self.clock()
        try:
            verified = oauth1.verify(authorization, method, url, self._token_secrets, now=now,
                                     seen_nonce=self._seen_nonce)
        except oauth1.OAuthError as exc:
            raise unauthorized(f"{exc.reason}: {exc.message}") from exc
        row = self.store.one("SELECT name, token_expiry FROM servers WHERE consumer_key = ?",
                             (verified.consumer_key,))
        assert row is not None  # verify() knew the consumer key from this table
        if row["token_expiry"] <= now:
            raise unauthorized(f"the server token of {row['name']} expired on {rfc3339(row['token_expiry'])}")
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            db.execute("INSERT INTO sessions VALUES (?,?,?,?)",
                       (_hash(token), row["name"], now, now + self.setup.session_ttl))
        return token, row["name"]

    def session_server(self, session_token: str | None) -> str:
        """The server an ``X-ADM-Auth-Session`` belongs to, or 401 UNAUTHORIZED."""
        if not session_token:
            raise unauthorized("no X-ADM-Auth-Session header; GET /session first")
        row = self.store.one("SELECT server, expires FROM sessions WHERE token_hash = ?", (_hash(session_token),))
        if row is None:
            raise unauthorized("the X-ADM-Auth-Session token is unknown")
        if row["expires"] <= self.clock():
            raise unauthorized("the X-ADM-Auth-Session token expired; GET /session for a new one")
        return row["server"]

    def account(self, server_name: str) -> dict:
        server = self._server(server_name)
        admin = f"admin@{self.setup.domains[0]}" if self.setup.domains else "admin@lab.test"
        org_id = self.store.value("SELECT value FROM meta WHERE key = 'org_id'")
        return {
            "server_name": server["name"], "server_uuid": server["server_uuid"],
            "admin_id": admin, "facilitator_id": admin,
            "org_name": self.setup.organization, "org_email": admin, "org_phone": "+1 555 0100",
            "org_address": "1 Lab Way, Testville", "org_id": org_id,
            "org_id_hash": hashlib.sha256(org_id.encode()).hexdigest(),
            "org_type": "edu" if self.setup.kind == "school" else "org", "org_version": "v2",
            "urls": [{"uri": uri, "http_method": methods} for uri, methods in (
                ("/session", ["GET"]), ("/account", ["GET"]),
                ("/account-driven-enrollment/profile", ["GET", "POST", "DELETE"]))],
        }

    def _check_org_supported(self) -> None:
        if self.faults is None:
            return
        armed = self.faults.take(catalogue.COMPONENT, self.setup.hosts["api"], at="adde-profile")
        if armed is not None:
            error = armed.apply()
            raise APIError(error.code, self.faults.say(error.message, armed), error.status)

    def set_discovery_url(self, server_name: str, body: bytes) -> str:
        self._check_org_supported()
        url = check_discovery_url(body)
        with self.store.transaction() as db:
            db.execute("UPDATE servers SET discovery_url = ?, url_updated = ? WHERE name = ?",
                       (url, self.clock(), server_name))
        return url

    def discovery_url(self, server_name: str) -> dict:
        self._check_org_supported()
        row = self._server(server_name)
        if row["discovery_url"] is None:
            raise APIError("NOT_FOUND", f"{server_name} has no service discovery URL", 404)
        return {"mdm_service_discovery_url": row["discovery_url"],
                "last_updated_timestamp": rfc3339(row["url_updated"])}

    def remove_discovery_url(self, server_name: str) -> None:
        self._check_org_supported()
        with self.store.transaction() as db:
            db.execute("UPDATE servers SET discovery_url = NULL, url_updated = NULL WHERE name = ?", (server_name,))

    # -- device-facing fallback (PROTOCOL.md 1.7) ----------------------------------------------------------
    def fallback(self, identifier: str | None, model_family: str | None) -> str:
        """The Location to send the device to, or FallbackRefused with the first requirement that fails."""
        account, domain = check_identifier(identifier)
        check_model_family(model_family, required=True)
        assert identifier is not None and model_family is not None  # both checked just above
        program, org = KINDS[self.setup.kind], self.setup.organization
        armed = self.faults.peek(catalogue.COMPONENT, self.setup.hosts["api"], at="adde-profile") \
            if self.faults is not None else None
        if armed is not None:  # no use consumed: the organization stays disabled while the fault is armed
            raise FallbackRefused("org-not-supported", self.faults.say(
                f"{org} is not enabled for account-driven enrollment in {program}", armed))
        row = self.store.one("SELECT verified FROM domains WHERE name = ?", (domain,))
        if row is None:
            raise FallbackRefused("domain-not-verified", f"{domain} is not a domain of any organization in {program}")
        if not row["verified"]:
            raise FallbackRefused("domain-not-verified", f"{domain} is not verified yet in {org}'s {program}")
        if not self.store.one("SELECT 1 FROM accounts WHERE identifier = ?", (account,)):
            raise FallbackRefused("unknown-managed-account", f"{identifier} is not a Managed Apple Account of {org}")
        server = self.default_assignments()[model_family]
        if server is None:
            raise FallbackRefused("no-default-assignment", f"{org} has no default MDM server for {model_family}")
        url = self._server(server)["discovery_url"]
        if url is None:
            raise FallbackRefused("no-service-discovery-url",
                                  f"{server}, the default MDM server for {model_family}, registered no "
                                  f"service discovery URL")
        return with_query(url, identifier.strip(), model_family)

    # -- views ---------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "organization": self.setup.organization, "kind": self.setup.kind, "program": KINDS[self.setup.kind],
            "org_id": self.store.value("SELECT value FROM meta WHERE key = 'org_id'"),
            "domains": [{"name": r["name"], "verified": bool(r["verified"]), "verification_record": r["txt_value"],
                         "last_checked": r["checked"] and rfc3339(r["checked"]), "last_check": r["check_result"]}
                        for r in self.store.query("SELECT * FROM domains ORDER BY name")],
            "accounts": self.accounts(),
            "servers": [{"name": r["name"], "server_uuid": r["server_uuid"], "lab_mdm": bool(r["lab_mdm"]),
                         "token_expiry": rfc3339(r["token_expiry"]),
                         "mdm_service_discovery_url": r["discovery_url"],
                         "last_updated_timestamp": r["url_updated"] and rfc3339(r["url_updated"])}
                        for r in self.store.query("SELECT * FROM servers ORDER BY name")],
            "default_assignments": self.default_assignments(),
        }

    def close(self) -> None:
        self.store.close()
