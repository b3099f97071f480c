"""``mdmlab dns``: records in the lab's DNS zone, through the control API."""
from __future__ import annotations

import click

from lab.cli.common import call, fail, state_dir_option
from lab.config import state_dir_flag

VERIFICATION_PREFIX = "apple-domain-verification="  # what Apple's verification TXT records start with
RECORD_TYPES = click.Choice(["A", "AAAA", "TXT"])


@click.group()
def dns():
    """Records in the lab's DNS zone (e.g. the TXT record that verifies a domain in ABM)."""


@dns.command("list")
@state_dir_option
def dns_list(state_dir):
    """The zone's records as the lab DNS serves them: NAME, TYPE, VALUE."""
    for record in call(state_dir, "GET", "/api/dns/records"):
        click.echo(f"{record['name']:<32} {record['type']:<5} {record['value']}{_override(record)}")


def _override(record: dict) -> str:
    """How an armed DNS override shows: its fault (unless concealed) and how many answers it has left."""
    if not record.get("overridden"):
        return ""
    left = record.get("remaining")
    times = "until cleared" if left is None else f"{left} more answer{'s' if left != 1 else ''}"
    return f"   (overridden{': fault ' + record['fault'] if record.get('fault') else ''}, {times})"


@dns.command("add")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=RECORD_TYPES)
@click.argument("value")
@state_dir_option
def dns_add(name, rtype, value, state_dir):
    """Add a record to the lab's zone (e.g. a TXT record that verifies a domain in ABM); says when it is already
    there, or stored but not served (a fault overrides the name)."""
    result = call(state_dir, "POST", "/api/dns/records", json={"name": name, "type": rtype, "value": value})
    if not result.get("served", True):
        fail(f"{name} {rtype} {value}: {result['note']}")
    click.echo(result.get("note") or f"added {name} {rtype} {value}")


@dns.command("remove")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=RECORD_TYPES)
@click.argument("value", required=False)
@state_dir_option
def dns_remove(name, rtype, value, state_dir):
    """Remove NAME's records of TYPE (only VALUE's, if given); says which, and when one verified a domain."""
    name = name.lower().rstrip(".")
    records = call(state_dir, "GET", "/api/dns/records")
    going = [r for r in records if r["name"].lower().rstrip(".") == name and r["type"] == rtype
             and (value is None or r["value"] == value)]
    body = {"name": name, "type": rtype, **({"value": value} if value else {})}
    removed = call(state_dir, "DELETE", "/api/dns/records", json=body)["removed"]
    click.echo(f"removed {removed} record(s)" + "".join(f"\n  {r['name']} {r['type']} {r['value']}" for r in going))
    for r in going:
        if r["type"] == "TXT" and r["value"].startswith(VERIFICATION_PREFIX):
            click.echo(f"note: that was {r['name']}'s domain-verification record: ABM/ASM cannot verify "
                       f"{r['name']} without it; put it back with: mdmlab dns add {r['name']} TXT '{r['value']}'"
                       + state_dir_flag(state_dir), err=True)
