"""Scenarios: TOML files describing the organization, its domains, users and MDM. Unknown keys are errors."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
DEFAULT_SCENARIO = "betterbag"

VERSIONS = ("mdm-byod", "mdm-adde")
AUTH_METHODS = ("simple",)
_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class User:
    identifier: str
    password: str
    full_name: str = ""


@dataclass(frozen=True)
class Domain:
    name: str
    version: str = "mdm-byod"
    txt: tuple[str, ...] = ()


@dataclass(frozen=True)
class MDM:
    host: str = "mdm.lab.test"
    auth: str = "simple"
    token_ttl: int = 3600
    topic: str = "com.apple.mgmt.External.mdmlab"


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

    @property
    def console_host(self) -> str:
        return f"console.{self.zone}"

    @property
    def suffixes(self) -> list[str]:
        """The DNS suffixes the lab is authoritative for, and the only names its CA may certify."""
        return sorted({self.zone, *(d.name for d in self.domains), "localhost"})

    def user(self, identifier: str) -> User | None:
        return next((u for u in self.users if u.identifier == identifier), None)


_SCHEMA = {
    "": {"scenario", "organization", "lab", "domains", "users", "mdm"},
    "scenario": {"name", "description"},
    "organization": {"name", "kind"},
    "lab": {"zone"},
    "domains": {"name", "version", "txt"},
    "users": {"identifier", "password", "full_name"},
    "mdm": {"host", "auth", "token_ttl", "topic"},
}


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


def _host(path: Path, where: str, value) -> str:
    value = _want(path, where, value, str).lower()
    if not _HOST_RE.match(value):
        raise ScenarioError(f"{path}: {where} is not a valid DNS name: {value!r}")
    return value


def parse(data: dict, path: Path) -> Scenario:
    _check_keys(path, "", data, "")
    for table in ("scenario", "organization", "lab", "mdm"):
        _check_keys(path, table, data.get(table, {}), table)
    for table in ("domains", "users"):
        items = data.get(table, [])
        if not isinstance(items, list):
            raise ScenarioError(f"{path}: [[{table}]] must be an array of tables")
        for i, item in enumerate(items):
            _check_keys(path, table, item, f"{table}[{i}]")

    org = data.get("organization", {})
    if "name" not in org:
        raise ScenarioError(f"{path}: [organization] needs a name")
    zone = _host(path, "lab.zone", data.get("lab", {}).get("zone", "lab.test"))

    domains = []
    for i, d in enumerate(data.get("domains", [])):
        where = f"domains[{i}]"
        if "name" not in d:
            raise ScenarioError(f"{path}: {where} needs a name")
        txt = d.get("txt", [])
        if not isinstance(txt, list) or not all(isinstance(t, str) for t in txt):
            raise ScenarioError(f"{path}: {where}.txt must be a list of strings")
        # Version is not checked against VERSIONS: a wrong Version is a field issue scenarios reproduce.
        domains.append(Domain(_host(path, f"{where}.name", d["name"]),
                              _want(path, f"{where}.version", d.get("version", "mdm-byod"), str), tuple(txt)))
    if not domains:
        raise ScenarioError(f"{path}: at least one [[domains]] entry is needed")

    users = []
    for i, u in enumerate(data.get("users", [])):
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
    )
    if mdm.token_ttl <= 0:
        raise ScenarioError(f"{path}: mdm.token_ttl must be a positive number of seconds")
    meta = data.get("scenario", {})
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
    )
    for host in (mdm.host,):
        if not any(host == s or host.endswith("." + s) for s in scenario.suffixes):
            raise ScenarioError(f"{path}: mdm.host {host!r} is outside the lab's zones ({', '.join(scenario.suffixes)})")
    return scenario
