"""``mdmlab probe``: the device's discovery against any domain, the lab's or a real one, check by check."""
from __future__ import annotations

import json
import sys

import click

from lab.cli.common import host_port, model_family_option


@click.command()
@click.argument("identifier")
@click.option("--dns", "dns_server", default=None, metavar="HOST:PORT",
              help="DNS server to ask [default: the system's resolver].")
@click.option("--ca", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Trust only this CA [default: the system trust store].")
@click.option("--port", type=click.IntRange(1, 65535), default=443, show_default=True,
              help="Port for the URLs the device builds itself (the well-known URL).")
@model_family_option
@click.option("--json", "as_json", is_flag=True)
def probe(identifier, dns_server, ca, port, model_family, as_json):
    """Diagnose the discovery of IDENTIFIER's domain (lab or real) and the first request of stage 2."""
    from lab.probe import probe as run_probe

    dns = host_port(dns_server, "--dns") if dns_server else None
    trace = run_probe(identifier, dns=dns, ca=ca, port=port, model_family=model_family)
    ok = trace.outcome == "enrolled"  # the trace's success state: every check passed
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), "outcome": "ok" if ok else "failed"}, indent=2))
    else:
        steps = trace.render().rsplit("\n", 1)[0]
        verdict = "PROBE OK" if ok else f"PROBE FAILED ({trace.diagnosis})"
        click.echo(f"{steps}\n{verdict}: {trace.explanation}")
    sys.exit(0 if ok else 1)
