"""``mdmlab device ...``: simulated devices that outlive one command (saved under <state-dir>/devices/), and the
MDM admin's side of them through the console's control API.

The device's side: list, show, sync (stands in for an APNs push: the device polls ServerURL until the queue is
empty), unenroll (the person signs out), backup, restore, unlock, invite, enroll (again). The MDM's side: command
(queue one), commands (their results), remove (the MDM removes the enrollment profile), revoke, expire,
token-lifetime.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lab import config
from lab.cli.common import call, fail, json_option, lab_info, nearest, network, state_dir_option
from lab.config import state_dir_flag


def _store(state_dir):
    from lab.device.store import DeviceStore

    return DeviceStore(config.state_dir(state_dir))


def save_enrolled(device, state_dir) -> str:
    """Keep a device ``mdmlab enroll`` enrolled, so ``mdmlab device ...`` can use it later; its id."""
    store = _store(state_dir)
    try:
        return store.save(device)
    finally:
        store.close()


def _require_saved(state_dir, device_id: str) -> None:
    """Fail in one line, creating nothing, when no device was ever saved in the state dir."""
    from lab.device.store import DeviceStore

    if not DeviceStore.saved(config.state_dir(state_dir)):
        fail(f"no device {device_id!r}: no devices saved in {config.state_dir(state_dir)} yet; "
             f"'mdmlab enroll IDENTIFIER{state_dir_flag(state_dir)}' enrolls and saves one")


class _Loaded:
    """A saved device, loaded for one command and saved back (also after a failure) when the command ends."""

    def __init__(self, state_dir, device_id: str, *, network_needed: bool = True):
        from lab.device.store import UnknownDevice

        info = lab_info(state_dir) if network_needed else None
        _require_saved(state_dir, device_id)
        self.store = _store(state_dir)
        try:
            reach = network(info) if info else _offline_network(config.state_dir(state_dir))
            self.device = self.store.load(device_id, reach)
        except UnknownDevice as exc:
            self.store.close()
            fail(str(exc))
        self.info, self.state_dir = info, state_dir

    def check_port(self) -> None:
        """Fail in one line when the device's MDM URLs (its enrollment profile's, which it keeps, as a real device
        does) name another HTTPS port than the running lab's: nothing of this lab would answer it."""
        from lab.device.store import server_port

        enrolled = self.device.enrollment
        port = server_port({"server_url": enrolled.server_url}) if enrolled is not None else None
        if self.info is None or port is None or port == self.info["https_port"]:
            return
        self.device.close()
        self.store.close()
        fail(f"{self.device.device_id} was enrolled when the lab served HTTPS on port {port} (its ServerURL "
             f"{enrolled.server_url}), but the lab now serves on {self.info['https_port']}: restart the lab with "
             f"--https-port {port} ('mdmlab up --https-port {port}{state_dir_flag(self.state_dir)}', with the "
             f"other options it had), or enroll the device again (sign out: 'mdmlab device unenroll "
             f"{self.device.device_id}{state_dir_flag(self.state_dir)}', then 'mdmlab device enroll "
             f"{self.device.device_id} {enrolled.identifier}{state_dir_flag(self.state_dir)}')")

    def __enter__(self):
        return self.device

    def __exit__(self, *exc):
        try:
            self.store.save(self.device)
        finally:
            self.device.close()
            self.store.close()


def _offline_network(state_dir: Path):
    """For commands that make no request (show, backup, ...): the lab's CA if it is around, no DNS needed."""
    from lab.net import Network

    ca = state_dir / "pki" / "ca.pem"
    if not ca.exists():
        fail(f"{ca} is missing: start the lab once ('mdmlab up{state_dir_flag(state_dir)}') so devices have a CA "
             "to trust")
    return Network("127.0.0.1", 53, str(ca))


def _print_trace(trace, as_json: bool, header: str, extra: dict | None = None) -> None:
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), **(extra or {})}, indent=2))
    else:
        click.echo(header)
        click.echo(trace.render())


@click.group()
def device():
    """Simulated devices that outlive one command: list, show, sync, unenroll, backup, restore, and MDM actions."""


@device.command("list")
@state_dir_option
@json_option
def device_list(state_dir, as_json):
    """The saved devices (every device 'mdmlab enroll' enrolled)."""
    from lab.device.store import DeviceStore

    rows = []
    if DeviceStore.saved(config.state_dir(state_dir)):  # a listing never creates the store
        store = _store(state_dir)
        try:
            rows = store.listing()
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no devices yet: 'mdmlab enroll IDENTIFIER{state_dir_flag(state_dir)}' enrolls and saves one")
    for row in rows:
        state = f"{row['mode']} as {row['enrolled_as']} ({row['enrollment_id']})" if row["enrolled_as"] \
            else "not enrolled"
        click.echo(f"{row['device_id']:<14} {row['model_family']:<7} {row['os_version']:<6} {state}")


@device.command("show")
@click.argument("device_id")
@state_dir_option
@json_option
def device_show(device_id, state_dir, as_json):
    """Everything about a device: enrollment, tokens, data separation, apps, profiles, personal data, history."""
    with _Loaded(state_dir, device_id, network_needed=False) as dev:
        described = dev.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    click.echo(render(described))


def render(d: dict) -> str:
    lines = [f"{d['device_id']} · {d['model_family']} ({d['product']}) · {d['os']} · UDID {d['udid']}",
             f"  personal Apple Account: {d['personal_account'] or 'none'}" + ("   [locked]" if d["locked"] else "")]
    e = d["enrollment"]
    if e is None:
        lines.append("  enrollment: none")
    else:
        auth = e["authentication"] or {}
        lines += [f"  enrollment: {e['mode']} as {e['identifier']} · EnrollmentID {e['enrollment_id']}"
                  + (f" · EnrollmentUserID {e['enrollment_user_id']}" if e.get("enrollment_user_id") else ""),
                  f"    ServerURL {e['server_url']} · CheckInURL {e['checkin_url']}",
                  f"    token: {auth.get('method')}"
                  + (", refresh token kept" if auth.get("refresh_token") else ", no refresh token")
                  + (f", renewed by the Enrollment SSO app {auth['sso_app']}" if auth.get("sso_app") else "")]
    volume = d["volume"]
    lines.append("  data-separated volume: " + (
        "none" if volume is None else
        f"enrollment {volume['enrollment_id']}, {volume['items']} sealed item(s), keys: {', '.join(volume['keys'])}"))
    lines.append("  data separation on this OS version:")
    for row in d["separation"]:
        where = row["store"] if d["volume"] else ("separated when enrolled" if row["separated"] else "not separated")
        since = ("since " if row["separated"] else "from  ") + row["since"]
        lines.append(f"    {'✓' if row['separated'] else '✗'} {row['label']:<28} {since:<20} "
                     f"work items {row['work_items']} ({where}), personal items {row['personal_items']}")
    lines.append("  apps:")
    for app in d["apps"]:
        lines.append(f"    {'managed ' if app['managed'] else 'personal'} {app['bundle_id']} ({app['name']})"
                     + (" · Enrollment SSO app" if app["source"] == "esso" else ""))
    lines.append("  profiles:")
    for profile in d["profiles"]:
        lines.append(f"    {profile['kind']:<10} {profile['identifier']} ({', '.join(profile['payload_types'])})")
    lines.append("  personal data: " + "; ".join(f"{c}: {', '.join(items)}" for c, items in d["personal"].items()
                                                 if items))
    for shred in d["shredded"]:
        lines.append(f"  destroyed volume of enrollment {shred['enrollment_id']}: {shred['items']} item(s), keys "
                     "erased (unreadable)")
    lines.append("  history:")
    lines += [f"    {h['event']}" for h in d["history"]]
    return "\n".join(lines)


@device.command("sync")
@click.argument("device_id")
@click.option("--password", default=None, help="What the person types if the token must be renewed by signing in.")
@state_dir_option
@json_option
def device_sync(device_id, password, state_dir, as_json):
    """Stand in for an APNs push: the device polls ServerURL and runs queued commands until the queue is empty."""
    loaded = _Loaded(state_dir, device_id)
    loaded.check_port()
    with loaded as dev:
        trace = dev.sync(password)
    from lab.device.channel import failed_commands

    _print_trace(trace, as_json, f"{dev.device_id} syncing with its MDM",
                 {"commands_failed": len(failed_commands(trace))})
    if trace.diagnosis == "reauth-needs-user" and not as_json:
        click.echo(f"sign in again: mdmlab device sync {dev.device_id} --password PASSWORD{state_dir_flag(state_dir)}",
                   err=True)
    sys.exit(1 if trace.outcome in ("failed", "commands-failed") else 0)


@device.command("unenroll")
@click.argument("device_id")
@state_dir_option
@json_option
def device_unenroll(device_id, state_dir, as_json):
    """The person signs out of the work account: keys destroyed, managed apps and data removed, CheckOut sent."""
    with _Loaded(state_dir, device_id) as dev:
        trace = dev.unenroll()
    _print_trace(trace, as_json, f"{dev.device_id} signing out of the work account")
    sys.exit(0 if trace.outcome != "failed" else 1)


@device.command("enroll")
@click.argument("device_id")
@click.argument("identifier")
@click.option("--password", default=None)
@state_dir_option
@json_option
def device_enroll(device_id, identifier, password, state_dir, as_json):
    """Enroll a saved device (again, e.g. after unenrolling or restoring a backup)."""
    loaded = _Loaded(state_dir, device_id)
    loaded.check_port()
    with loaded as dev:
        trace = dev.enroll(identifier, password)
    _print_trace(trace, as_json, f"{dev.device_id} enrolling as {identifier}")
    sys.exit(0 if trace.outcome == "enrolled" else 1)


@device.command("backup")
@click.argument("device_id")
@state_dir_option
def device_backup(device_id, state_dir):
    """Back the device up (the person's data only); prints the backup id."""
    loaded = _Loaded(state_dir, device_id, network_needed=False)
    with loaded as dev:
        backup_id = loaded.store.save_backup(dev)
    click.echo(backup_id)


@device.command("restore")
@click.argument("device_id")
@click.argument("backup_id")
@state_dir_option
def device_restore(device_id, backup_id, state_dir):
    """Erase the device and restore a backup: personal data comes back, the enrollment does not."""
    from lab.device.store import UnknownDevice

    loaded = _Loaded(state_dir, device_id, network_needed=False)
    with loaded as dev:
        try:
            backup = loaded.store.backup(backup_id)
        except UnknownDevice as exc:
            fail(str(exc))
        was = dev.enrollment.identifier if dev.enrollment else None
        dev.restore(backup)
    click.echo(f"restored {backup_id} onto {dev.device_id}: personal data is back"
               + (f"; the enrollment of {was} is not (enroll again)" if was else ""))


@device.command("unlock")
@click.argument("device_id")
@state_dir_option
def device_unlock(device_id, state_dir):
    """The person unlocks the device: commands that answered NotNow can run at the next sync."""
    with _Loaded(state_dir, device_id, network_needed=False) as dev:
        dev.unlock()
    click.echo(f"{dev.device_id} unlocked")


@device.command("invite")
@click.argument("device_id")
@click.option("--account", type=click.Choice(["personal", "managed"]), default="personal", show_default=True,
              help="Which Apple Account opens the managed app distribution invitation.")
@state_dir_option
def device_invite(device_id, account, state_dir):
    """Open a managed app distribution (VPP) invitation on the device with an Apple Account."""
    with _Loaded(state_dir, device_id, network_needed=False) as dev:
        who = dev.contents.personal_account if account == "personal" else (
            dev.enrollment.identifier if dev.enrollment else None)
        ok, message = dev.accept_invitation(who or "")
    click.echo(("accepted: " if ok else "refused: ") + message)
    sys.exit(0 if ok else 1)


# -- the MDM's side, through the console's control API -----------------------------------------------------------
def _enrollment_id(state_dir, device_id: str) -> str:
    from lab.device.store import UnknownDevice

    _require_saved(state_dir, device_id)
    store = _store(state_dir)
    try:
        rows = {r["device_id"]: r for r in store.listing()}
        row = rows[store.resolve(device_id)]  # resolve() names a stored device
    except UnknownDevice as exc:
        fail(str(exc))
    finally:
        store.close()
    if not row["enrollment_id"]:
        fail(f"{row['device_id']} is not enrolled")
    return row["enrollment_id"]


# Keys a command needs that the admin need not type: what a console's defaults would fill in.
COMMAND_DEFAULTS: dict[str, dict] = {
    "DeviceInformation": {"Queries": ["DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model",
                                      "ProductName"]},
    # a User Enrollment installs App Store apps only with a VPP license (PurchaseMethod 1)
    "InstallApplication": {"Options": {"PurchaseMethod": 1}},
}
RESULT_ENVELOPE = {"CommandUUID", "EnrollmentID", "Topic", "Status", "UDID", "ErrorChain"}


def command_body(request_type: str, params: tuple[str, ...]) -> tuple[dict, dict]:
    """The command's keys from ``-p KEY=VALUE`` (VALUE as JSON when it parses; a repeated KEY makes a list), and
    the defaults filled in for keys left out."""
    body: dict = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if key in body:
            before = body[key] if isinstance(body[key], list) else [body[key]]
            body[key] = before + (parsed if isinstance(parsed, list) else [parsed])
        else:
            body[key] = parsed
    filled = {k: v for k, v in COMMAND_DEFAULTS.get(request_type, {}).items() if k not in body}
    return {**body, **filled}, filled


def _known_command(request_type: str) -> None:
    """Fail in one line, with the nearest names, unless Apple's schema knows ``request_type``."""
    from lab.schema.facts import names

    known = names("command")
    if request_type not in known:
        fail(nearest(request_type, known, "command in Apple's schema") + " (--raw queues it anyway)")


@device.command("command")
@click.argument("device_id")
@click.argument("request_type")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A command key; VALUE is JSON when it parses as JSON, and a repeated KEY makes a list "
                   "(e.g. -p iTunesStoreID=1660000002, -p Queries=OSVersion -p Queries=ModelName, "
                   "-p 'Queries=[\"OSVersion\"]'). Required keys left out get defaults (DeviceInformation: "
                   "common Queries; InstallApplication: Options PurchaseMethod 1).")
@click.option("--raw", is_flag=True,
              help="Queue REQUEST_TYPE as typed even when Apple's schema knows no such command (to see how the "
                   "device refuses it).")
@state_dir_option
def device_command(device_id, request_type, params, raw, state_dir):
    """Queue a command for the device at the MDM (the device runs it at its next sync).

    \b
    e.g. mdmlab device command ID DeviceInformation
         mdmlab device command ID InstallApplication -p iTunesStoreID=1660000002
    """
    if not raw:
        _known_command(request_type)
    body, filled = command_body(request_type, params)
    eid = _enrollment_id(state_dir, device_id)
    result = call(state_dir, "POST", f"/api/mdm/enrollments/{eid}/commands",
                  json={"request_type": request_type, "params": body})
    defaults = f" (defaults: {', '.join(f'{k}={json.dumps(v)}' for k, v in filled.items())})" if filled else ""
    click.echo(f"queued {request_type} {result['command_uuid']}{defaults}; "
               f"run 'mdmlab device sync {device_id}{state_dir_flag(state_dir)}'")


@device.command("commands")
@click.argument("device_id")
@state_dir_option
@json_option
def device_commands(device_id, state_dir, as_json):
    """The device's commands at the MDM: status, why a refused one was refused, and what the device answered."""
    rows = call(state_dir, "GET", f"/api/mdm/enrollments/{_enrollment_id(state_dir, device_id)}/commands")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['command_uuid']}  {row['request_type']:<24} {row['status']}")
        for line in _command_details(row, f"mdmlab device sync {device_id}{state_dir_flag(state_dir)}"):
            click.echo(f"    {line}")


def _command_details(row: dict, sync: str) -> list[str]:
    result = row.get("result") or {}
    lines = [f"{e.get('ErrorDomain')} {e.get('ErrorCode')}: {e.get('USEnglishDescription')}"
             for e in row.get("error_chain") or []]
    if row["status"] == "CommandFormatError":
        lines.append("the device found the command malformed: a required key is missing or of the wrong type "
                     f"('{sync}' shows which)")
    answer = {k: v for k, v in result.items() if k not in RESULT_ENVELOPE}
    if answer:
        text = json.dumps(answer, default=str)
        lines.append("response: " + (text if len(text) <= 300 else text[:297] + "..."))
    return lines


@device.command("remove")
@click.argument("device_id")
@state_dir_option
def device_remove(device_id, state_dir):
    """The MDM removes the enrollment profile (queued RemoveProfile): the device unenrolls at its next sync."""
    result = call(state_dir, "POST", f"/api/mdm/enrollments/{_enrollment_id(state_dir, device_id)}/unenroll")
    click.echo(f"queued RemoveProfile {result['command_uuid']}; "
               f"run 'mdmlab device sync {device_id}{state_dir_flag(state_dir)}'")


@device.command("revoke")
@click.argument("device_id")
@state_dir_option
def device_revoke(device_id, state_dir):
    """The MDM revokes the device's tokens (access and refresh): it must sign in again."""
    result = call(state_dir, "POST", "/api/mdm/tokens/revoke",
                  json={"enrollment_id": _enrollment_id(state_dir, device_id)})
    click.echo(f"revoked {result['revoked']} grant(s)")


@device.command("expire")
@click.argument("device_id")
@state_dir_option
def device_expire(device_id, state_dir):
    """The MDM expires the device's access token now (its refresh token still works)."""
    result = call(state_dir, "POST", "/api/mdm/tokens/expire",
                  json={"enrollment_id": _enrollment_id(state_dir, device_id)})
    click.echo(f"expired {result['expired']} access token(s)")


@device.command("token-lifetime")
@click.argument("seconds", type=click.IntRange(1, 366 * 86400), required=False)
@state_dir_option
def device_token_lifetime(seconds, state_dir):
    """Show or set how long the MDM's new access tokens live."""
    if seconds is None:
        result = call(state_dir, "GET", "/api/mdm/token-lifetime")
    else:
        result = call(state_dir, "PUT", "/api/mdm/token-lifetime", json={"seconds": seconds})
    click.echo(f"access tokens live {result['seconds']} s")
