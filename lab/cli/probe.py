"""``mdmlab probe``: the device's discovery against any domain, the lab's or a real one, check by check."""
from __future__ import annotations

import json
import sys

import click

from lab import config
from lab.cli.common import fail, host_port, model_family_option, state_dir_option


@click.command()
@click.argument("identifier")
@click.option("--dns", "dns_server", default=None, metavar="HOST:PORT",
              help="DNS server to ask [default: the running lab's for its domains, else the system's resolver].")
@click.option("--ca", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Trust only this CA [default: the running lab's for its domains, else the system trust store].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port for the URLs the device builds itself (the well-known URL) [default: the running lab's "
                   "for its domains, else 443].")
@model_family_option
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
def probe(identifier, dns_server, ca, port, model_family, state_dir, as_json):
    """Diagnose the discovery of IDENTIFIER's domain (lab or real) and the first request of stage 2.

    A domain of the running lab (found through lab.json, like every command) is probed through the lab's DNS,
    CA and port; any other domain as a phone on this machine's network would see it."""
    from lab.probe import probe as run_probe

    dns = host_port(dns_server, "--dns") if dns_server else None
    info = _lab_for(identifier, state_dir)
    if info is not None and dns is None and ca is None:
        dns, ca = (info.get("dns_address", "127.0.0.1"), int(info["dns_port"])), info["ca_cert"]
        port = port or int(info["https_port"])
        if not as_json:
            click.echo(f"probing through the running lab: DNS {dns[0]}:{dns[1]}, its CA, HTTPS port {port}")
    trace = run_probe(identifier, dns=dns, ca=ca, port=port or 443, model_family=model_family)
    ok = trace.outcome == "enrolled"  # the trace's success state: every check passed
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), "outcome": "ok" if ok else "failed"}, indent=2))
    else:
        steps = trace.render().rsplit("\n", 1)[0]
        verdict = "PROBE OK" if ok else f"PROBE FAILED ({trace.diagnosis})"
        click.echo(f"{steps}\n{verdict}: {trace.explanation}")
    sys.exit(0 if ok else 1)


def _lab_for(identifier: str, state_dir: str | None) -> dict | None:
    """The running lab's lab.json when IDENTIFIER's domain is one of the lab's names; a --state-dir without a
    running lab is an error (the person meant that lab)."""
    try:
        info = config.read_lab_file(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        if state_dir:
            fail(str(exc))
        return None
    domain = identifier.rpartition("@")[2].lower().rstrip(".")
    names = [n.lower() for n in [*(info.get("domains") or []), *(info.get("hosts") or [])]]
    return info if any(domain == n or domain.endswith("." + n) for n in names) else None
