"""``mdmlab enroll``: a simulated device enrolls through the running lab, and its trace joins the timeline."""
from __future__ import annotations

import json
import sys

import click

from lab import config
from lab.cli.common import lab_info, model_family_option, network, state_dir_option
from lab.cli.device import save_enrolled
from lab.config import state_dir_flag
from lab.protocol import BUNDLE_ID

TRIGGERS = ("http", "transport", "content")


@click.command()
@click.argument("identifier")
@model_family_option
@click.option("--os-version", default=None, help="OS version of the device, e.g. 18.2 [default: 26.1].")
@click.option("--password", default=None, help="Password typed on the sign-in page (prompted when on a terminal).")
@click.option("--strict", is_flag=True, help="Reject what a real device was only seen or inferred to tolerate.")
@click.option("--fallback-on", default=",".join(TRIGGERS), show_default=True,
              help="Which org-domain failures send an 18.2+ device to ABM/ASM (comma-separated).")
@click.option("--app", "apps", multiple=True, metavar="BUNDLE_ID",
              help="An app the person installed before enrolling (repeatable) [default: test.mdmlab.chat].")
@click.option("--managed-by", default=None, metavar="MDM",
              help="Another MDM already manages the device (Settings then offers no work-account sign-in).")
@click.option("--discovery-wait", "discovery_timeout", type=click.FloatRange(0.1, 600), default=None,
              metavar="SECONDS",
              help="How long the device waits for the organization's service discovery [default: 90, as an iPhone].")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def enroll(identifier, model_family, os_version, password, strict, fallback_on, apps, managed_by,
           discovery_timeout, state_dir, as_json):
    """Enroll a simulated device as IDENTIFIER through the running lab; exit 0 only when enrolled."""
    from lab import exercises
    from lab.device import Device
    from lab.device.device import parse_version

    info = lab_info(state_dir)
    if os_version is not None:
        try:
            parse_version(os_version)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--os-version") from None
    triggers = tuple(t.strip() for t in fallback_on.split(",") if t.strip())
    unknown = sorted(set(triggers) - set(TRIGGERS))
    if unknown:
        raise click.BadParameter(f"unknown trigger {unknown[0]!r}; use {', '.join(TRIGGERS)}",
                                 param_hint="--fallback-on")
    bad = next((a for a in apps if not BUNDLE_ID.fullmatch(a)), None)
    if bad is not None:
        raise click.BadParameter(f"{bad!r} is not a bundle identifier; use reverse-DNS, e.g. com.example.chat",
                                 param_hint="--app")
    if password is None and sys.stdin.isatty() and not as_json:
        password = click.prompt(f"Password for {identifier}", hide_input=True, default="", show_default=False) or None
    device = Device(network(info), model_family=model_family, os_version=os_version or "", strict=strict,
                    fallback_on=triggers, managed_by=managed_by, **({"personal_apps": apps} if apps else {}),
                    **({"discovery_timeout": discovery_timeout} if discovery_timeout is not None else {}))
    try:
        trace = device.enroll(identifier, password)
        saved = {"device_id": save_enrolled(device, state_dir)} if trace.outcome == "enrolled" else {}
    finally:
        device.close()
    report_trace(state_dir, identifier, trace)
    exercise = bool(info.get("exercise"))  # the trainee reads the symptom, never a code that names the fault
    if as_json:
        shown = exercises.for_trainee(trace.to_dict()) if exercise else trace.to_dict()
        click.echo(json.dumps({**shown, **saved}, indent=2))
    else:
        click.echo(f"{device.model_family} ({device.product}, {device.os_name} {device.os_version}) "
                   f"enrolling as {identifier}")
        click.echo(exercises.render_for_trainee(trace) if exercise else trace.render())
        if saved:
            click.echo(f"device id: {saved['device_id']} (mdmlab device show {saved['device_id']}"
                       f"{state_dir_flag(state_dir)})")
    sys.exit(0 if trace.outcome == "enrolled" else 1)


def report_trace(state_dir, identifier: str, trace) -> None:
    """Hand the device's own steps to the lab's timeline, as a sysdiagnose would; the enrollment's result does
    not depend on it, so a console that cannot be reached only costs a warning."""
    from lab.cli.control import ControlClient, ControlError

    try:
        client = ControlClient(config.state_dir(state_dir))
    except config.NoLabRunning:
        return
    try:
        client.request("POST", "/api/device-traces", json={"identifier": identifier, **trace.to_dict()})
    except ControlError as exc:
        click.echo(f"warning: the device's trace did not reach the timeline: {exc}", err=True)
    finally:
        client.close()
