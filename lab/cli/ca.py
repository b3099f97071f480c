"""``mdmlab ca export``: the lab CA devices must trust, fetched from the running lab's console."""
from __future__ import annotations

from pathlib import Path

import click
import requests

from lab.cli.common import control, state_dir_option


@click.group("ca")
def ca():
    """The lab's CA: the certificate devices must trust."""


@ca.command("export")
@click.option("--mobileconfig", is_flag=True,
              help="A configuration profile for iPhone, iPad and Mac instead of PEM.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write to FILE instead of standard output.")
@state_dir_option
def ca_export(mobileconfig, output, state_dir):
    """Export the lab CA (PEM, or a .mobileconfig profile), fetched from the running lab's console."""
    client = control(state_dir)
    path = "/ca.mobileconfig" if mobileconfig else "/ca.pem"
    try:
        response = client.session.get(client.base + path, timeout=10)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the lab's console at {client.base}: {exc.__class__.__name__}; "
                                   "is 'mdmlab up' still running?") from None
    finally:
        client.close()
    if response.status_code != 200:
        raise click.ClickException(f"the lab refused GET {path} ({response.status_code})")
    if output is None:
        click.get_binary_stream("stdout").write(response.content)
        return
    try:
        output.write_bytes(response.content)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    hint = ("; install it, then turn on full trust in Settings > General > About > Certificate Trust Settings"
            if mobileconfig else "")
    click.echo(f"wrote {output}{hint}", err=True)
