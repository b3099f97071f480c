"""``mdmlab fleet``: many simulated devices enroll and check in at once, with a progress bar and a summary."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lab import config
from lab.cli.common import state_dir_option


def _users(values: tuple[str, ...]) -> list[tuple[str, str]]:
    users = []
    for value in values:
        identifier, sep, password = value.partition(":")
        if not sep or "@" not in identifier or not password:
            raise click.BadParameter(f"{value!r} is not IDENTIFIER:PASSWORD", param_hint="--user")
        users.append((identifier, password))
    return users


@click.command()
@click.option("--devices", "-n", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="How many simulated devices enroll.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="How many devices are enrolling at any moment.")
@click.option("--mix", default="iPhone=100", show_default=True, metavar="MODEL=WEIGHT,...",
              help="Models of the fleet by weight, e.g. iPhone=70,Mac=30 (iPhone, iPad, Mac, Vision).")
@click.option("--against", "against", default=None, metavar="URL",
              help="A lab elsewhere, by its console URL (https://HOST:PORT/) [default: the lab of --state-dir].")
@click.option("--ca", "ca_cert", default=None, type=click.Path(exists=True, dir_okay=False),
              help="With --against: that lab's CA certificate (mdmlab ca export on its machine).")
@click.option("--admin-token", default=None, envvar="MDMLAB_ADMIN_TOKEN",
              help="With --against a lab beyond loopback: its admin token [env MDMLAB_ADMIN_TOKEN].")
@click.option("--user", "users", multiple=True, metavar="IDENTIFIER:PASSWORD",
              help="Account to sign in with (repeatable; devices take them in turn) [default: the scenario's].")
@click.option("--journal", type=click.Path(dir_okay=False), default=None,
              help="Append every completed enrollment (with the device's token; mode 0600) to this file.")
@click.option("--recheck", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instead of enrolling: every device of this journal checks in again with its token.")
@click.option("--no-check-in", is_flag=True, help="Enroll only; skip the check-in on the command channel.")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the progress bar goes to stderr).")
def fleet(devices, concurrency, mix, against, ca_cert, admin_token, users, journal, recheck, no_check_in,
          state_dir, as_json):
    """Enroll a fleet of simulated devices concurrently and summarize: enrollments/s, p50/p95/p99 per stage,
    errors by cause. Exit 0 only when every device enrolled and checked in."""
    from lab import fleet as fleet_mod

    try:
        accounts = _users(users)
        weights = fleet_mod.parse_mix(mix)
        if against:
            if ca_cert is None:
                local = config.state_dir(state_dir) / "pki" / "ca.pem"
                if not local.is_file():
                    raise click.BadParameter("give the lab's CA certificate with --ca", param_hint="--against")
                ca_cert = str(local)
            target = fleet_mod.target_from_url(against, ca_cert, accounts, admin_token)
        else:
            target = fleet_mod.target_from_state_dir(config.state_dir(state_dir), accounts)
        if recheck:
            records = fleet_mod.Journal.read(Path(recheck))
            result = fleet_mod.recheck(target, records, concurrency)
            if as_json:
                click.echo(json.dumps(result.to_dict(), indent=2))
            else:
                click.echo(f"{result.ok} of {result.checked} devices checked in again"
                           + ("" if not result.failures else "; failures: " + ", ".join(
                               f"{k} ×{v}" for k, v in sorted(result.failures.items()))))
            sys.exit(0 if result.ok == result.checked else 1)
    except fleet_mod.FleetError as exc:
        raise click.ClickException(str(exc)) from None

    with click.progressbar(length=devices, label=f"enrolling {devices} devices", file=sys.stderr,
                           show_pos=True, show_percent=False) as bar:
        report = fleet_mod.run(target, devices, concurrency, weights, journal=Path(journal) if journal else None,
                               sync=not no_check_in, on_result=lambda _result: bar.update(1))
    interrupted = (report.stopped or "").startswith("interrupted")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.render())
    if interrupted:
        kept = (f"the journal {journal} kept the {report.enrolled} device(s) that finished "
                f"('mdmlab fleet --recheck {journal}{_same_lab(against, ca_cert, state_dir)}' checks them in again)"
                if journal else
                "no --journal was given, so the finished devices' tokens are gone")
        click.echo(f"interrupted: the summary above covers the devices that finished; {kept}", err=True)
        sys.exit(130)
    sys.exit(0 if report.failed == 0 and not report.not_started else 1)


def _same_lab(against, ca_cert, state_dir) -> str:
    """The options that make a suggested fleet command reach this lab again."""
    if against:
        return f" --against {against}" + (f" --ca-cert {ca_cert}" if ca_cert else "")
    return config.state_dir_flag(state_dir)
