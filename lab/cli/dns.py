"""``mdmlab dns``: records in the lab's DNS zone, through the control API."""
from __future__ import annotations

import click

from lab.cli.common import call, state_dir_option

RECORD_TYPES = click.Choice(["A", "AAAA", "TXT"])


@click.group()
def dns():
    """Records in the lab's DNS zone (e.g. the TXT record that verifies a domain in ABM)."""


@dns.command("list")
@state_dir_option
def dns_list(state_dir):
    for record in call(state_dir, "GET", "/api/dns/records"):
        click.echo(f"{record['name']:<32} {record['type']:<5} {record['value']}")


@dns.command("add")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=RECORD_TYPES)
@click.argument("value")
@state_dir_option
def dns_add(name, rtype, value, state_dir):
    call(state_dir, "POST", "/api/dns/records", json={"name": name, "type": rtype, "value": value})
    click.echo(f"added {name} {rtype} {value}")


@dns.command("remove")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=RECORD_TYPES)
@click.argument("value", required=False)
@state_dir_option
def dns_remove(name, rtype, value, state_dir):
    body = {"name": name, "type": rtype, **({"value": value} if value else {})}
    removed = call(state_dir, "DELETE", "/api/dns/records", json=body)["removed"]
    click.echo(f"removed {removed} record(s)")
