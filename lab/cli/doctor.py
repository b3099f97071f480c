"""``mdmlab doctor``: on the lab's machine, whether a phone on the LAN can use the lab, check by check."""
from __future__ import annotations

import json
import sys

import click

from lab import config
from lab.cli.common import json_option, state_dir_option

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@state_dir_option
@click.option("--outside-name", default="apple.com", show_default=True,
              help="A name outside the lab to resolve through its upstream.")
@json_option
def doctor(state_dir, outside_name, as_json):
    """Whether a phone on the LAN can use the running lab: DNS, HTTPS per host, the CA profile, upstream, clock.
    Exit 0 only when no check fails; each failing check says its fix."""
    from lab.doctor import diagnose

    directory = config.state_dir(state_dir)
    checks = diagnose(directory, outside_name=outside_name)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        click.echo(f"mdmlab doctor · the lab in {directory}")
        for check in checks:
            click.echo(f"  {MARK[check.status]}  {check.name:<34} {check.detail}")
            if check.fix:
                click.echo(f"  {'':<4}  {'':<34} fix: {check.fix}")
        click.echo("A phone on the LAN can use this lab." if not failed else
                   f"A phone on the LAN cannot use this lab yet: {len(failed)} check(s) failed.")
    sys.exit(1 if failed else 0)
