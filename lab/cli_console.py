"""``mdmlab events`` and ``mdmlab ca export``: the console's control API from the command line.

Like every command but ``up`` they find the running lab through <state-dir>/lab.json and talk to its console
(https://localhost:<port>/), never to the lab's files.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import click
import requests

from lab import config

STREAM_READ_TIMEOUT = 60  # seconds; the console sends a keep-alive comment every 15
RECONNECT_TRIES = 5

state_dir_option = click.option("--state-dir", default=None, help="State directory of the running lab.")


def _client(state_dir):
    from lab.control import ControlClient

    try:
        return ControlClient(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        raise click.ClickException(str(exc)) from None


def _call(client, method: str, path: str, **kwargs):
    from lab.control import ControlError

    try:
        return client.request(method, path, **kwargs)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None


def render(event: dict) -> str:
    """One line per event: id, time, component, stage, then the request and status, or the summary."""
    clock = dt.datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S.%f")[:-3]
    head = f"{event['id']:>6} {clock} {event['component']:<10} {event.get('stage') or '-':<14}"
    if event["kind"] == "http":
        return f"{head} {event['method']} {event['host']}{event['path']} → {event['status']}  {event['summary']}"
    return f"{head} {event['summary']}"


def _print(event: dict, as_json: bool) -> None:
    click.echo(json.dumps(event) if as_json else render(event))
    sys.stdout.flush()


def _lab_stopped(event: dict) -> bool:
    return event["kind"] == "lab" and event.get("outcome") == "lab-stopped"


def sse_events(lines):
    """Events out of a text/event-stream's lines: (id, data) per message; comments and retry are skipped."""
    event_id, data = None, []
    for line in lines:
        if line == "":
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def follow(client, after: int, filters: dict, as_json: bool) -> None:
    """Print events as they happen, reconnecting where the last one left off, until Ctrl-C or the lab stops."""
    cursor, failures = after, 0
    while True:
        try:
            with client.session.get(client.base + "/api/events/stream", params=filters, stream=True,
                                    headers={"Last-Event-ID": str(cursor), "Accept": "text/event-stream"},
                                    timeout=(10, STREAM_READ_TIMEOUT)) as response:
                if response.status_code != 200:
                    raise click.ClickException(f"the lab refused the event stream ({response.status_code}): "
                                               f"{response.text.strip()[:200]}")
                failures = 0
                for event_id, data in sse_events(response.iter_lines(decode_unicode=True)):
                    event = json.loads(data)
                    cursor = int(event_id or event["id"])
                    _print(event, as_json)
                    if _lab_stopped(event):
                        return
        except requests.RequestException as exc:
            failures += 1
            if failures >= RECONNECT_TRIES:
                raise click.ClickException(f"lost the lab's event stream at {client.base}: "
                                           f"{exc.__class__.__name__}; is 'mdmlab up' still running?") from None
            time.sleep(min(2.0, 0.25 * 2 ** failures))


@click.command("events")
@click.option("--follow", "following", is_flag=True, help="Keep printing events as they happen (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: an array of events; with --follow, one event object per line.")
@click.option("--last", type=click.IntRange(0, 5000), default=50, show_default=True,
              help="How many of the newest events to print first.")
@click.option("--after", type=click.IntRange(min=0), default=None,
              help="Print every event after this id instead of the newest (--last does not apply).")
@click.option("--host", default=None, help="Only events of this host (or DNS name).")
@click.option("--device", default=None, help="Only events of this device: user identifier or EnrollmentID.")
@click.option("--component", default=None, help="Only events of this component: dns, org-domain, abm, mdm, "
                                                 "device, faults, console, lab.")
@click.option("--kind", default=None, help="Only events of this kind: http, dns, device, device-outcome, fault, lab.")
@state_dir_option
def events(following, as_json, last, after, host, device, component, kind, state_dir):
    """The lab's event timeline: every HTTP exchange, DNS answer, fault change and device step."""
    client = _client(state_dir)
    filters = {k: v for k, v in (("host", host), ("device", device), ("component", component), ("kind", kind))
               if v is not None}
    try:
        top = _call(client, "GET", "/api/health")["last_event_id"]
        if after is None:
            found = _call(client, "GET", "/api/events", params={"last": last, **filters})
        else:
            found, cursor = [], after
            while True:
                page = _call(client, "GET", "/api/events", params={"after": cursor, "limit": 5000, **filters})
                found.extend(page)
                if len(page) < 5000:
                    break
                cursor = page[-1]["id"]
        if as_json and not following:
            click.echo(json.dumps(found, indent=2))
            return
        for event in found:
            _print(event, as_json)
        if following:
            follow(client, max([top, *(e["id"] for e in found)]), filters, as_json)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


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
    client = _client(state_dir)
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
