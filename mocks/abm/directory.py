"""What ABM/ASM tells Apple's identity service about Managed Apple Accounts (lab; one Apple back end).

The identity service (``mocks.apple_id``) is handed an ``ABMDirectory`` by the launcher and asks it, at each
sign-in: does this account exist and whose is it, is this identifier only a mail alias, what does the organization's
"Allow Managed Apple Account on" setting say, and which organization and public key belong to an MDM server's
server_uuid. Other organizations' accounts are Apple's too: a scenario may name some, so that an account of
another organization signing in through this organization's MDM can be reproduced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lab.protocol import MAA_ALLOWED_ON as ALLOW_ON

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_keys (name TEXT PRIMARY KEY, public_key TEXT NOT NULL);
"""


@dataclass(frozen=True)
class OtherOrganization:
    name: str
    accounts: tuple[str, ...]
    servers: tuple[tuple[str, str], ...] = ()  # (server name, server_uuid) of that organization's MDM servers
    maa_allowed_on: str = "any"


@dataclass(frozen=True)
class DirectorySetup:
    maa_allowed_on: str = "any"
    aliases: dict[str, str] = field(default_factory=dict)  # mail alias → the Managed Apple Account it reaches
    federated: bool = False  # the organization federates its accounts with its IdP
    other_organizations: tuple[OtherOrganization, ...] = ()
    server_keys: dict[str, str] = field(default_factory=dict)  # MDM server name → the public key the admin uploaded


class ABMDirectory:
    def __init__(self, state, setup: DirectorySetup):
        for value in (setup.maa_allowed_on, *(o.maa_allowed_on for o in setup.other_organizations)):
            if value not in ALLOW_ON:
                raise ValueError(f"maa_allowed_on must be one of {', '.join(ALLOW_ON)}, got {value!r}")
        self.state, self.setup = state, setup
        with state.store.transaction() as db:
            db.execute(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('maa_allowed_on', ?)", (setup.maa_allowed_on,))
        for name, pem in setup.server_keys.items():
            self.register_server_key(name, pem)

    # -- the setting, as the admin changes it in Access Management -------------------------------------------
    def maa_allowed_on(self, organization: str) -> str:
        if organization != self.state.setup.organization:
            return next((o.maa_allowed_on for o in self.setup.other_organizations if o.name == organization), "any")
        row = self.state.store.one("SELECT value FROM meta WHERE key = 'maa_allowed_on'")
        return row["value"] if row else self.setup.maa_allowed_on

    def set_maa_allowed_on(self, value: str) -> str:
        if value not in ALLOW_ON:
            raise ValueError(f"Allow Managed Apple Account on must be one of {', '.join(ALLOW_ON)}, got {value!r}")
        with self.state.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('maa_allowed_on', ?)", (value,))
        return value

    # -- accounts ------------------------------------------------------------------------------------------
    def account_record(self, identifier: str) -> dict | None:
        account = identifier.strip().lower()
        if account in self.state.accounts():
            return {"identifier": account, "organization": self.state.setup.organization,
                    "federated": self.setup.federated}
        for other in self.setup.other_organizations:
            if account in (a.lower() for a in other.accounts):
                return {"identifier": account, "organization": other.name, "federated": False}
        return None

    def alias_owner(self, identifier: str) -> str | None:
        owner = {k.lower(): v.lower() for k, v in self.setup.aliases.items()}.get(identifier.strip().lower())
        return owner if owner and self.account_record(owner) else None

    # -- MDM servers ---------------------------------------------------------------------------------------
    def register_server_key(self, server_name: str, public_key_pem: str) -> None:
        """The public key the admin uploads when creating the MDM server (ABM/ASM: Add MDM Server)."""
        self.state._server(server_name)  # raises for an unknown server
        if "BEGIN PUBLIC KEY" not in public_key_pem and "BEGIN CERTIFICATE" not in public_key_pem:
            raise ValueError("the MDM server's public key must be PEM")
        with self.state.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO server_keys VALUES (?, ?)", (server_name, public_key_pem))

    def server_record(self, server_uuid: str) -> dict | None:
        row = self.state.store.one("SELECT s.name, s.server_uuid, k.public_key FROM servers s "
                                   "LEFT JOIN server_keys k ON k.name = s.name WHERE s.server_uuid = ?",
                                   (server_uuid,))
        if row is not None:
            return {"server_uuid": row["server_uuid"], "name": row["name"],
                    "organization": self.state.setup.organization, "public_key_pem": row["public_key"]}
        for other in self.setup.other_organizations:
            for name, other_uuid in other.servers:
                if other_uuid == server_uuid:
                    return {"server_uuid": other_uuid, "name": name, "organization": other.name,
                            "public_key_pem": None}
        return None
