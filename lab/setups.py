"""What each mock is told, from the scenario and the lab's URLs: pure functions, so the launcher only builds.

A setup is the mock's own configuration (``MDMSetup``, ``DomainSetup``, ``ABMSetup``); the scenario is the lab's.
"""
from __future__ import annotations

from collections.abc import Callable

from lab.scenario import Domain, Scenario
from mocks import abm, apple_id, mdm, org_domain


def mdm_setup(sc: Scenario, urls: dict, idp_origin: str, federation_secret: bytes) -> mdm.MDMSetup:
    first = sc.domains[0]
    return mdm.MDMSetup(organization=sc.organization, host=sc.mdm.host, topic=sc.mdm.topic, users=sc.users,
                        version=first.version, versions=dict(first.versions),
                        idp_origin=idp_origin if sc.mdm.federated else "",
                        federation_secret=federation_secret, **mdm.scenario_options(sc.mdm), **urls)


def domain_setup(sc: Scenario, d: Domain, urls: dict, origin: Callable[[str], str]) -> org_domain.DomainSetup:
    """The org domain's answer and its redirect chain; hop targets carry the lab's port (``origin``)."""
    chain = [(d.name, org_domain.WELL_KNOWN_PATH)] + [(r.host, r.path) for r in d.redirects]
    hops = tuple(org_domain.Hop(chain[i][0], chain[i][1], r.status, origin(r.host) + r.path, r.keep_query)
                 for i, r in enumerate(d.redirects))
    final = None if chain[-1][0] == sc.mdm.host else chain[-1]  # None: the MDM answers at its own discovery URL
    return org_domain.DomainSetup(d.name, d.version, urls["base_url"], dict(d.versions), hops, final,
                                  urls["adde_base_url"], {f: origin(h) for f, h in d.mdm_hosts})


def abm_setup(sc: Scenario) -> abm.ABMSetup:
    """ABM/ASM's organization; its Managed Apple Accounts default to the users of the domains it owns."""
    owned = {d.name for d in sc.domains}
    accounts = sc.abm.accounts if sc.abm.accounts is not None else tuple(
        u.identifier for u in sc.users if u.identifier.rsplit("@", 1)[1] in owned)
    return abm.ABMSetup(organization=sc.organization, kind=sc.kind, domains=tuple(sorted(owned)), accounts=accounts,
                        servers=sc.abm.servers, session_ttl=sc.abm.session_ttl, hosts=sc.abm_hosts)


def address_hosts(sc: Scenario, hosts) -> set[str]:
    """The hosts that get an address record: all served but localhost and a domain whose record the field lost
    (``address = false``: restoring it is the repair)."""
    return set(hosts) - {"localhost"} - {d.name for d in sc.domains if not d.address}


def registered_url(sc: Scenario, urls: dict) -> str | None:
    """What the MDM registers with ABM instead of its discovery URL (``abm.register_url = "enroll"``), or None."""
    return urls["base_url"] if sc.abm.register_url == "enroll" else None


def set_up_abm(sc: Scenario, abm_state: abm.ABMState, mdm_state: mdm.MDMState, session, origin: Callable,
               events) -> None:
    """ABM as the admin left it: the scenario's domains verified and, when an MDM server is assigned devices, the
    MDM's discovery URL registered through the Device Assignment API with the server token an admin downloaded
    from ABM."""
    for domain in sc.abm.verified_domains:
        abm_state.verify_domain(domain)
    mdm_server = next((s for s in sc.abm.servers if s.mdm), None)
    if mdm_server is None or not sc.abm.register_url:
        return
    token = abm_state.server_token(mdm_server.name)
    mdm_state.register_with_abm(origin(sc.abm_hosts["api"]), token, session,
                                url=registered_url(sc, mdm.urls(origin(sc.mdm.host))), events=events)


def apple_directory(sc: Scenario, abm_state: abm.ABMState | None, mdm_state: mdm.MDMState):
    """What Apple's identity service reads: the emulated ABM/ASM's directory, or, when the scenario's organization
    uses its real ABM/ASM (``[abm] enabled = false``), its users as the accounts Apple knows."""
    if abm_state is None:
        return apple_id.UsersDirectory(sc.organization, [u.identifier for u in sc.users])
    return abm.ABMDirectory(abm_state, directory_setup(sc, mdm_state))


def directory_setup(sc: Scenario, mdm_state: mdm.MDMState) -> abm.DirectorySetup:
    """What ABM/ASM knows for Apple's identity service: the Access Management setting, aliases, other
    organizations, and the public key the admin uploaded with the lab MDM's server (its com.apple.maid signer)."""
    server = next((s for s in sc.abm.servers if s.mdm), None)
    others = tuple(abm.OtherOrganization(o.name, o.accounts, (), o.maa_allowed_on) for o in sc.abm.other_organizations)
    return abm.DirectorySetup(maa_allowed_on=sc.abm.maa_allowed_on, aliases=dict(sc.abm.aliases),
                              other_organizations=others, federated=sc.abm.federated,
                              server_keys={server.name: mdm_state.maid_public_key()} if server else {})


def apple_id_setup(sc: Scenario, origin: str, idp_origin: str, federation_secret: bytes) -> apple_id.AppleIDSetup:
    """The Managed Apple Accounts' passwords at Apple (the scenario's users'; federated accounts never use them),
    Apple's own origin, and the organization's IdP when ABM/ASM federates its accounts."""
    return apple_id.AppleIDSetup(passwords={u.identifier.lower(): u.password for u in sc.users}, origin=origin,
                                 idp_origin=idp_origin if sc.abm.federated else "",
                                 federation_secret=federation_secret)


def idp_relying_parties(sc: Scenario, urls: dict, apple_origin: str) -> dict[str, set[str]]:
    """The applications registered at the organization's IdP: the MDM's web sign-in, and Apple when ABM/ASM
    federates the Managed Apple Accounts (without Apple's redirect URI when the scenario says the registration is
    incomplete: ``[abm] federation_redirect_registered = false``)."""
    parties = {mdm.FEDERATION_CLIENT_ID: {urls["federated_callback_url"]}}
    if sc.abm.federated:
        registered = sc.abm.federation_redirect_registered
        parties[apple_id.CLIENT_ID] = {apple_origin + apple_id.FEDERATED_CALLBACK_PATH} if registered else set()
    return parties


def fault_hosts(sc: Scenario, zone_names: set[str], served: set[str], abm_hosts: bool) -> tuple[dict, dict]:
    """Which hosts each component's faults may target, and the host each targets when none is named."""
    hosts = {"dns": zone_names - {"localhost"}, "tls": served, "org-domain": {d.name for d in sc.domains},
             "mdm": {sc.mdm.host}, "abm": {sc.abm_hosts["api"]} if abm_hosts else set(),
             "apple-id": {sc.apple_identity_host}, "idp": {sc.idp_host} if sc.idp_host else set()}
    defaults = {"mdm": sc.mdm.host, "apple-id": sc.apple_identity_host, **({"idp": sc.idp_host} if sc.idp_host else {}),
                **({"abm": sc.abm_hosts["api"]} if abm_hosts else {})}
    return hosts, defaults
