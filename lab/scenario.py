"""Scenarios: TOML files describing the organization, its domains, users and MDM. Unknown keys are errors."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lab.protocol import BUNDLE_ID, ENROLLMENT_STAGES, MAA_ALLOWED_ON, MODEL_FAMILIES

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
DEFAULT_SCENARIO = "betterbag"

VERSIONS = ("mdm-byod", "mdm-adde")
AUTH_METHODS = ("simple", "oauth2")  # apple-as-web, apple-oauth2
_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class User:
    identifier: str
    password: str
    full_name: str = ""


@dataclass(frozen=True)
class Redirect:
    """One hop: the URL before it answers ``status`` with Location https://host[:port]path[?query]."""
    status: int
    host: str
    path: str
    keep_query: bool = True


@dataclass(frozen=True)
class Domain:
    name: str
    version: str = "mdm-byod"
    versions: tuple[tuple[str, str], ...] = ()  # (model family or user identifier, Version) overrides
    redirects: tuple[Redirect, ...] = ()
    txt: tuple[str, ...] = ()
    address: bool = True  # False: the zone has no A/AAAA for the domain (a deleted record); restoring it repairs
    mdm_hosts: tuple[tuple[str, str], ...] = ()  # (model family, MDM host): routing per device type


@dataclass(frozen=True)
class ABMServer:
    name: str
    default_for: tuple[str, ...] = ()
    mdm: bool = True  # this server is the lab's MDM mock (it holds the server token and registers its URL)


@dataclass(frozen=True)
class ABM:
    enabled: bool = True
    verified_domains: tuple[str, ...] = ()
    unverified_domains: tuple[str, ...] = ()
    accounts: tuple[str, ...] | None = None  # None: every scenario user whose domain the org owns
    servers: tuple[ABMServer, ...] = ()
    register_url: bool | str = True  # False: the MDM never registers; "enroll": it registers its enroll URL (a mistake)
    session_ttl: int = 1800
    # after the profile: Apple's side of the Managed Apple Account sign-in (mocks/apple_id)
    maa_allowed_on: str = "any"  # Access Management, "Allow Managed Apple Account on": any, managed, supervised
    aliases: tuple[tuple[str, str], ...] = ()  # (mail alias, the Managed Apple Account it reaches)
    other_organizations: tuple[OtherOrganization, ...] = ()
    # federated authentication: the organization's Managed Apple Accounts sign in at its IdP (idp.<first domain>)
    federated: bool = False
    federation_redirect_registered: bool = True  # False: the IdP does not allow Apple's redirect URI


@dataclass(frozen=True)
class OtherOrganization:
    """Another organization at Apple, whose accounts may wander into this lab's MDM."""
    name: str
    accounts: tuple[str, ...] = ()
    maa_allowed_on: str = "any"


@dataclass(frozen=True)
class ArmedFault:
    name: str
    host: str | None = None
    times: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class DeviceSetup:
    identifier: str | None = None
    password: str | None = None
    model_family: str = "iPhone"
    os_version: str = "26.1"
    strict: bool = False
    discovery_timeout: float = 90.0
    fallback_on: tuple[str, ...] = ("http", "transport", "content")
    personal_apps: tuple[str, ...] | None = None  # bundle ids the person installed before enrolling (None: default)
    managed_by: str | None = None  # another MDM already manages the device
    virtual_machine: bool = False  # a Mac virtual machine (Apple refuses Apple Account sign-in below macOS 15)
    supervised: bool = False


@dataclass(frozen=True)
class Expect:
    outcome: str
    stage: str | None = None
    path: str | None = None
    diagnosis: str | None = None


@dataclass(frozen=True)
class MDM:
    host: str = "mdm.lab.test"
    auth: str = "simple"
    token_ttl: int = 3600
    topic: str = "com.apple.mgmt.External.mdmlab"
    refresh_tokens: bool = True  # OAuth 2: the token endpoint issues refresh tokens
    refresh_ttl: int = 30 * 86400
    code_ttl: int = 60  # OAuth 2 authorization codes: single use, this short-lived
    client_id: str = "8C1D4B2E-6D0F-4E55-9E1A-MDMLAB000001"
    scope: str = "mdm"  # "" leaves scope out of the challenge
    federated: bool = False  # sign-in goes to the organization's IdP at idp.<first domain>
    esso: bool = False  # the enrollment 401 carries X-Apple-MDM-ESSO (Enrollment SSO)
    pkce_plain: bool = False  # OAuth 2: also accept PKCE's plain method (RFC 7636 4.2; S256 only by default)
    callback_status: int = 308  # the sign-in's last redirect (Apple: 308; Fleet's server: 303)
    challenge_separator: str = "comma"  # between the challenge's parameters: "comma" (Apple's ", ") or "space"
    parse_by_content_type: bool = False  # parse the enrollment request by its Content-Type, as Rack does
    refuse_families: tuple[str, ...] = ()  # model families the MDM refuses (403 com.apple.well-known.failed)
    personal_devices: bool = True  # False: User Enrollment (mdm-byod) is refused the same way
    schema_check: str = "strict"  # what the device sends, against Apple's schema: strict (400), warn or off
    maid_tokens: bool = True  # advertise com.apple.mdm.token and answer GetToken for com.apple.maid


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    organization: str
    kind: str = "business"
    description: str = ""
    zone: str = "lab.test"
    domains: tuple[Domain, ...] = ()
    users: tuple[User, ...] = ()
    mdm: MDM = field(default_factory=MDM)
    abm: ABM = field(default_factory=ABM)
    faults: tuple[ArmedFault, ...] = ()
    device: DeviceSetup = field(default_factory=DeviceSetup)
    expect: Expect | None = None
    exercise: int | None = None

    @property
    def console_host(self) -> str:
        return f"console.{self.zone}"

    @property
    def apple_identity_host(self) -> str:
        """Apple's identity service for Managed Apple Account sign-in, beside ABM in Apple's zone."""
        return f"gsa.{self.zone}"

    @property
    def idp_host(self) -> str | None:
        """The organization's identity provider when the MDM's sign-in or ABM/ASM's Managed Apple Accounts are
        federated: idp.<first domain>."""
        return f"idp.{self.domains[0].name}" if (self.mdm.federated or self.abm.federated) and self.domains else None

    @property
    def abm_hosts(self) -> dict[str, str]:
        """Where "Apple" is in the lab: the device-facing fallback, the Device Assignment API, the admin site."""
        return {"fallback": f"axm-adm-enroll.{self.zone}", "api": f"mdmenrollment.{self.zone}",
                "admin": f"business.{self.zone}"}

    @property
    def suffixes(self) -> list[str]:
        """The DNS suffixes the lab is authoritative for, and the only names its CA may certify."""
        return sorted({self.zone, *(d.name for d in self.domains), "localhost"})

    def user(self, identifier: str) -> User | None:
        return next((u for u in self.users if u.identifier == identifier), None)


_SCHEMA = {
    "": {"scenario", "organization", "lab", "domains", "users", "mdm", "abm", "faults", "device", "expect"},
    "scenario": {"name", "description", "exercise"},
    "organization": {"name", "kind"},
    "lab": {"zone"},
    "domains": {"name", "version", "versions", "redirects", "txt", "address", "mdm_hosts"},
    "redirects": {"status", "host", "path", "keep_query"},
    "users": {"identifier", "password", "full_name"},
    "mdm": {"host", "auth", "token_ttl", "topic", "refresh_tokens", "refresh_ttl", "code_ttl", "client_id", "scope",
            "federated", "esso", "pkce_plain", "callback_status", "challenge_separator", "parse_by_content_type",
            "refuse_families", "personal_devices", "schema_check", "maid_tokens"},
    "abm": {"enabled", "verified_domains", "unverified_domains", "accounts", "servers", "register_url",
            "session_ttl", "maa_allowed_on", "aliases", "other_organizations", "federated",
            "federation_redirect_registered"},
    "other_organizations": {"name", "accounts", "maa_allowed_on"},
    "servers": {"name", "default_for", "mdm"},
    "faults": {"name", "host", "times", "seconds"},
    "device": {"identifier", "password", "model_family", "os_version", "strict", "discovery_timeout",
               "fallback_on", "personal_apps", "managed_by", "virtual_machine", "supervised"},
    "expect": {"outcome", "stage", "path", "diagnosis"},
}
DEVICE_FAMILIES = ("iPhone", "iPad", "Mac", "Vision")
FALLBACK_TRIGGERS = ("http", "transport", "content")


def resolve_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
        return candidate
    return SCENARIO_DIR / f"{name_or_path}.toml"


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load(name_or_path: str = DEFAULT_SCENARIO) -> Scenario:
    path = resolve_path(name_or_path)
    if not path.exists():
        raise ScenarioError(f"scenario '{name_or_path}' not found (looked for {path}); "
                            f"available: {', '.join(available()) or 'none'}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return parse(data, path)


def _check_keys(path: Path, table: str, value, where: str) -> None:
    if not isinstance(value, dict):
        raise ScenarioError(f"{path}: [{where}] must be a table")
    unknown = sorted(set(value) - _SCHEMA[table])
    if unknown:
        raise ScenarioError(f"{path}: unknown key '{unknown[0]}' in [{where or 'top level'}]; "
                            f"allowed: {', '.join(sorted(_SCHEMA[table]))}")


def _want(path: Path, where: str, value, kind, *, choices=None):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ScenarioError(f"{path}: {where} must be a {kind.__name__}, got {value!r}")
    if choices and value not in choices:
        raise ScenarioError(f"{path}: {where} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _register_url(path: Path, value) -> bool | str:
    if value not in (True, False, "enroll"):
        raise ScenarioError(f"{path}: abm.register_url must be true, false or \"enroll\" (the MDM registers its "
                            f"enroll URL instead of its service discovery URL), got {value!r}")
    return value


def _host(path: Path, where: str, value) -> str:
    value = _want(path, where, value, str).lower()
    if not _HOST_RE.match(value):
        raise ScenarioError(f"{path}: {where} is not a valid DNS name: {value!r}")
    return value


def _strings(path: Path, where: str, value, *, choices=None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{path}: {where} must be a list of strings")
    for v in value:
        if choices and v not in choices:
            raise ScenarioError(f"{path}: {where} has {v!r}; allowed: {', '.join(choices)}")
    return tuple(value)


def _table_list(path: Path, data: dict, key: str, schema: str, where: str) -> list[dict]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise ScenarioError(f"{path}: [[{where}]] must be an array of tables")
    for i, item in enumerate(items):
        _check_keys(path, schema, item, f"{where}[{i}]")
    return items


def _domain(path: Path, i: int, d: dict) -> Domain:
    where = f"domains[{i}]"
    if "name" not in d:
        raise ScenarioError(f"{path}: {where} needs a name")
    versions = d.get("versions", {})
    if not isinstance(versions, dict):
        raise ScenarioError(f"{path}: {where}.versions must be a table of model family = Version")
    for key, version in versions.items():
        if "@" not in key:  # a key is a model family, or a user identifier for a per-user answer
            _want(path, f"{where}.versions.{key}", key, str, choices=MODEL_FAMILIES)
        _want(path, f"{where}.versions.{key}", version, str)
    redirects = []
    for j, r in enumerate(_table_list(path, d, "redirects", "redirects", f"{where}.redirects")):
        w = f"{where}.redirects[{j}]"
        for key in ("host", "path"):
            if key not in r:
                raise ScenarioError(f"{path}: {w} needs {key}")
        if not str(r["path"]).startswith("/"):
            raise ScenarioError(f"{path}: {w}.path must start with /")
        redirects.append(Redirect(_want(path, f"{w}.status", r.get("status", 301), int,
                                        choices=(301, 302, 303, 307, 308)),
                                  _host(path, f"{w}.host", r["host"]), _want(path, f"{w}.path", r["path"], str),
                                  _want(path, f"{w}.keep_query", r.get("keep_query", True), bool)))
    mdm_hosts = d.get("mdm_hosts", {})
    if not isinstance(mdm_hosts, dict):
        raise ScenarioError(f"{path}: {where}.mdm_hosts must be a table of model family = MDM host")
    for family in mdm_hosts:
        _want(path, f"{where}.mdm_hosts.{family}", family, str, choices=MODEL_FAMILIES)
    routes = tuple(sorted((f, _host(path, f"{where}.mdm_hosts.{f}", h)) for f, h in mdm_hosts.items()))
    # Version is not checked against the known values: a wrong Version is a field issue scenarios reproduce.
    return Domain(_host(path, f"{where}.name", d["name"]), _want(path, f"{where}.version",
                  d.get("version", "mdm-byod"), str), tuple(sorted(versions.items())), tuple(redirects),
                  _strings(path, f"{where}.txt", d.get("txt", [])),
                  _want(path, f"{where}.address", d.get("address", True), bool), routes)


def _abm(path: Path, a: dict, domains: list[Domain]) -> ABM:
    servers = []
    for i, srv in enumerate(_table_list(path, a, "servers", "servers", "abm.servers")):
        if "name" not in srv:
            raise ScenarioError(f"{path}: abm.servers[{i}] needs a name")
        servers.append(ABMServer(_want(path, f"abm.servers[{i}].name", srv["name"], str),
                                 _strings(path, f"abm.servers[{i}].default_for", srv.get("default_for", []),
                                          choices=MODEL_FAMILIES),
                                 _want(path, f"abm.servers[{i}].mdm", srv.get("mdm", i == 0), bool)))
    if not servers:
        servers = [ABMServer("Lab MDM", ("iPhone", "iPad", "Mac", "RealityDevice"), True)]
    if sum(s.mdm for s in servers) > 1:
        raise ScenarioError(f"{path}: only one of [[abm.servers]] can be the lab's MDM (mdm = true)")
    names = [d.name for d in domains]
    verified = _strings(path, "abm.verified_domains", a.get("verified_domains", names))
    unverified = _strings(path, "abm.unverified_domains", a.get("unverified_domains", []))
    accounts = a.get("accounts")
    aliases = a.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in aliases.items()):
        raise ScenarioError(f"{path}: abm.aliases must be a table of \"alias\" = \"account\" strings")
    others = []
    for i, other in enumerate(_table_list(path, a, "other_organizations", "other_organizations",
                                          "abm.other_organizations")):
        where = f"abm.other_organizations[{i}]"
        if "name" not in other:
            raise ScenarioError(f"{path}: {where} needs a name")
        others.append(OtherOrganization(
            _want(path, f"{where}.name", other["name"], str),
            _strings(path, f"{where}.accounts", other.get("accounts", [])),
            _want(path, f"{where}.maa_allowed_on", other.get("maa_allowed_on", "any"), str,
                  choices=MAA_ALLOWED_ON)))
    return ABM(
        enabled=_want(path, "abm.enabled", a.get("enabled", True), bool),
        verified_domains=tuple(v for v in verified if v not in unverified), unverified_domains=unverified,
        accounts=None if accounts is None else _strings(path, "abm.accounts", accounts),
        servers=tuple(servers), register_url=_register_url(path, a.get("register_url", True)),
        session_ttl=_want(path, "abm.session_ttl", a.get("session_ttl", 1800), int),
        maa_allowed_on=_want(path, "abm.maa_allowed_on", a.get("maa_allowed_on", "any"), str,
                             choices=MAA_ALLOWED_ON),
        aliases=tuple(sorted(aliases.items())), other_organizations=tuple(others),
        federated=_want(path, "abm.federated", a.get("federated", False), bool),
        federation_redirect_registered=_want(path, "abm.federation_redirect_registered",
                                             a.get("federation_redirect_registered", True), bool))


def _device(path: Path, d: dict) -> DeviceSetup:
    timeout = d.get("discovery_timeout", 90.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
        raise ScenarioError(f"{path}: device.discovery_timeout must be a number of seconds in (0, 300]")
    return DeviceSetup(
        identifier=d.get("identifier") and _want(path, "device.identifier", d["identifier"], str),
        password=d.get("password") and _want(path, "device.password", d["password"], str),
        model_family=_want(path, "device.model_family", d.get("model_family", "iPhone"), str,
                           choices=DEVICE_FAMILIES),
        os_version=_want(path, "device.os_version", str(d.get("os_version", "26.1")), str),
        strict=_want(path, "device.strict", d.get("strict", False), bool),
        discovery_timeout=float(timeout),
        fallback_on=_strings(path, "device.fallback_on", d.get("fallback_on", list(FALLBACK_TRIGGERS)),
                             choices=FALLBACK_TRIGGERS),
        personal_apps=None if "personal_apps" not in d else _bundle_ids(path, d["personal_apps"]),
        managed_by=d.get("managed_by") and _want(path, "device.managed_by", d["managed_by"], str),
        virtual_machine=_want(path, "device.virtual_machine", d.get("virtual_machine", False), bool),
        supervised=_want(path, "device.supervised", d.get("supervised", False), bool))


def _bundle_ids(path: Path, value) -> tuple[str, ...]:
    apps = _strings(path, "device.personal_apps", value)
    bad = [a for a in apps if not BUNDLE_ID.fullmatch(a)]
    if bad:
        raise ScenarioError(f"{path}: device.personal_apps: {bad[0]!r} is not a bundle identifier "
                            "(reverse-DNS, e.g. com.example.chat)")
    return apps


def _expect(path: Path, e: dict) -> Expect:
    if "outcome" not in e:
        raise ScenarioError(f"{path}: [expect] needs outcome (enrolled or failed)")
    return Expect(_want(path, "expect.outcome", e["outcome"], str, choices=("enrolled", "failed")),
                  e.get("stage") and _want(path, "expect.stage", e["stage"], str, choices=ENROLLMENT_STAGES),
                  e.get("path") and _want(path, "expect.path", e["path"], str, choices=("direct", "abm")),
                  e.get("diagnosis") and _want(path, "expect.diagnosis", e["diagnosis"], str))


def parse(data: dict, path: Path) -> Scenario:
    _check_keys(path, "", data, "")
    for table in ("scenario", "organization", "lab", "mdm", "abm", "device", "expect"):
        _check_keys(path, table, data.get(table, {}), table)
    org = data.get("organization", {})
    if "name" not in org:
        raise ScenarioError(f"{path}: [organization] needs a name")
    zone = _host(path, "lab.zone", data.get("lab", {}).get("zone", "lab.test"))

    domains = [_domain(path, i, d) for i, d in enumerate(_table_list(path, data, "domains", "domains", "domains"))]
    if not domains:
        raise ScenarioError(f"{path}: at least one [[domains]] entry is needed")

    users = []
    for i, u in enumerate(_table_list(path, data, "users", "users", "users")):
        where = f"users[{i}]"
        for key in ("identifier", "password"):
            if key not in u:
                raise ScenarioError(f"{path}: {where} needs {key}")
        ident = _want(path, f"{where}.identifier", u["identifier"], str)
        if ident.count("@") != 1 or not ident.split("@")[0]:
            raise ScenarioError(f"{path}: {where}.identifier must look like name@domain, got {ident!r}")
        users.append(User(ident, _want(path, f"{where}.password", u["password"], str),
                          _want(path, f"{where}.full_name", u.get("full_name", ""), str)))

    m = data.get("mdm", {})
    mdm = MDM(
        host=_host(path, "mdm.host", m.get("host", f"mdm.{zone}")),
        auth=_want(path, "mdm.auth", m.get("auth", "simple"), str, choices=AUTH_METHODS),
        token_ttl=_want(path, "mdm.token_ttl", m.get("token_ttl", 3600), int),
        topic=_want(path, "mdm.topic", m.get("topic", "com.apple.mgmt.External.mdmlab"), str),
        refresh_tokens=_want(path, "mdm.refresh_tokens", m.get("refresh_tokens", True), bool),
        refresh_ttl=_want(path, "mdm.refresh_ttl", m.get("refresh_ttl", MDM.refresh_ttl), int),
        code_ttl=_want(path, "mdm.code_ttl", m.get("code_ttl", MDM.code_ttl), int),
        client_id=_want(path, "mdm.client_id", m.get("client_id", MDM.client_id), str),
        scope=_want(path, "mdm.scope", m.get("scope", MDM.scope), str),
        federated=_want(path, "mdm.federated", m.get("federated", False), bool),
        esso=_want(path, "mdm.esso", m.get("esso", False), bool),
        pkce_plain=_want(path, "mdm.pkce_plain", m.get("pkce_plain", False), bool),
        callback_status=_want(path, "mdm.callback_status", m.get("callback_status", 308), int,
                              choices=(302, 303, 307, 308)),
        challenge_separator=_want(path, "mdm.challenge_separator", m.get("challenge_separator", "comma"), str,
                                  choices=("comma", "space")),
        parse_by_content_type=_want(path, "mdm.parse_by_content_type", m.get("parse_by_content_type", False), bool),
        refuse_families=_strings(path, "mdm.refuse_families", m.get("refuse_families", []), choices=MODEL_FAMILIES),
        personal_devices=_want(path, "mdm.personal_devices", m.get("personal_devices", True), bool),
        schema_check=_want(path, "mdm.schema_check", m.get("schema_check", "strict"), str,
                           choices=("warn", "strict", "off")),
        maid_tokens=_want(path, "mdm.maid_tokens", m.get("maid_tokens", True), bool),
    )
    for key in ("token_ttl", "refresh_ttl", "code_ttl"):
        if getattr(mdm, key) <= 0:
            raise ScenarioError(f"{path}: mdm.{key} must be a positive number of seconds")
    if not mdm.client_id.strip() or any(c.isspace() or c in '"\\' for c in mdm.client_id):
        raise ScenarioError(f"{path}: mdm.client_id must be a non-empty string without spaces or quotes")
    if any(c in '"\\' for c in mdm.scope):
        raise ScenarioError(f"{path}: mdm.scope must not contain quotes or backslashes")
    faults = []
    for i, f in enumerate(_table_list(path, data, "faults", "faults", "faults")):
        if "name" not in f:
            raise ScenarioError(f"{path}: faults[{i}] needs a name")
        times = f.get("times")
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise ScenarioError(f"{path}: faults[{i}].times must be a positive integer")
        seconds = f.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or not 0 <= seconds <= 120):
            raise ScenarioError(f"{path}: faults[{i}].seconds must be a number of seconds in [0, 120]")
        faults.append(ArmedFault(_want(path, f"faults[{i}].name", f["name"], str),
                                 f.get("host") and _host(path, f"faults[{i}].host", f["host"]), times,
                                 None if seconds is None else float(seconds)))
    meta = data.get("scenario", {})
    exercise = meta.get("exercise")
    if exercise is not None and (not isinstance(exercise, int) or isinstance(exercise, bool) or exercise < 1):
        raise ScenarioError(f"{path}: scenario.exercise must be a positive integer")
    scenario = Scenario(
        name=_want(path, "scenario.name", meta.get("name", path.stem), str),
        path=path,
        organization=_want(path, "organization.name", org["name"], str),
        kind=_want(path, "organization.kind", org.get("kind", "business"), str, choices=("business", "school")),
        description=_want(path, "scenario.description", meta.get("description", ""), str),
        zone=zone,
        domains=tuple(domains),
        users=tuple(users),
        mdm=mdm,
        abm=_abm(path, data.get("abm", {}), domains),
        faults=tuple(faults),
        device=_device(path, data.get("device", {})),
        expect=_expect(path, data["expect"]) if "expect" in data else None,
        exercise=exercise,
    )
    extra_hosts = [r.host for d in domains for r in d.redirects]
    for host in (mdm.host, *extra_hosts):
        if not any(host == s or host.endswith("." + s) for s in scenario.suffixes):
            raise ScenarioError(f"{path}: host {host!r} is outside the lab's zones ({', '.join(scenario.suffixes)})")
    return scenario
