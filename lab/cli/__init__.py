"""The mdmlab command line: one module per command group, registered here. Every command but ``up`` (and the
offline ones: scenario list, fault list without a lab) finds the running lab through <state-dir>/lab.json."""
from __future__ import annotations

import click

from lab.cli.ca import ca
from lab.cli.device import device
from lab.cli.dns import dns
from lab.cli.doctor import doctor
from lab.cli.enroll import enroll
from lab.cli.events import events
from lab.cli.exercise import exercise
from lab.cli.fault import fault
from lab.cli.fleet import fleet
from lab.cli.probe import probe
from lab.cli.scenario import scenario
from lab.cli.up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mdmlab")
def main() -> None:
    """A lab for Apple's account-driven User Enrollment and Device Enrollment."""


for command in (up, enroll, fault, probe, dns, scenario, exercise, device, events, ca, fleet, doctor):
    main.add_command(command)
