"""``mdmlab events``: the lab's timeline from the command line, as a listing or followed live.

Like every command but ``up`` it finds the running lab through <state-dir>/lab.json and talks to its console
(https://localhost:<port>/), never to the lab's files.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time

import click
import requests

from lab import config
from lab.cli.common import control, fail, request, state_dir_option

COMPONENTS = ("dns", "org-domain", "abm", "mdm", "idp", "device", "faults", "console", "lab")
KINDS = ("http", "dns", "device", "device-outcome", "fault", "lab")
MAX_PAGE = 5000  # the most /api/events returns at once
STREAM_READ_TIMEOUT = 60  # seconds; the console sends a keep-alive comment every 15
RECONNECT_TRIES = 5

def _not_console_traffic(event: dict) -> bool:
    return not (event["component"] == "console" and event["kind"] == "http")


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


def follow(client, after: int, filters: dict, as_json: bool, shown=lambda event: True) -> None:
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
                    if shown(event):
                        _print(event, as_json)
                    if _lab_stopped(event):
                        return
        except requests.RequestException as exc:
            failures += 1
            if failures >= RECONNECT_TRIES:
                raise click.ClickException(f"lost the lab's event stream at {client.base}: "
                                           f"{exc.__class__.__name__}; is 'mdmlab up' still running?") from None
            time.sleep(min(2.0, 0.25 * 2 ** failures))


def _newest(client, last: int, filters: dict, shown) -> list[dict]:
    """The newest ``last`` events that are ``shown``, asking for more while hidden ones crowd them out."""
    wide = last
    while last:
        page = request(client, "GET", "/api/events", params={"last": wide, **filters})
        kept = [e for e in page if shown(e)]
        if len(kept) >= last or len(page) < wide or wide >= MAX_PAGE:
            return kept[-last:]
        wide = min(MAX_PAGE, wide * 4)
    return []


def _device_filter(state_dir, wanted: str) -> dict:
    """--device as the timeline knows devices: a saved device's id (the one 'mdmlab enroll' prints) becomes its
    EnrollmentID; an identifier or EnrollmentID stays what it is."""
    from lab.device.store import DeviceStore

    directory = config.state_dir(state_dir)
    if "@" in wanted or not DeviceStore.saved(directory):
        return {"device": wanted}
    store = DeviceStore(directory)
    try:
        row = next((r for r in store.listing() if r["device_id"] == wanted.strip().upper()), None)
    finally:
        store.close()
    if row is None:
        return {"device": wanted}
    if not row["enrollment_id"]:
        fail(f"{row['device_id']} is not enrolled, so no event carries it; --device takes a user identifier, an "
             f"EnrollmentID, or an enrolled device's id ('mdmlab device list{config.state_dir_flag(state_dir)}')")
    return {"enrollment": row["enrollment_id"]}


@click.command("events")
@click.option("--follow", "following", is_flag=True, help="Keep printing events as they happen (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: an array of events; with --follow, one event object per line.")
@click.option("--last", type=click.IntRange(0, MAX_PAGE), default=50, show_default=True,
              help="How many of the newest events to print first.")
@click.option("--after", type=click.IntRange(min=0), default=None,
              help="Print every event after this id instead of the newest (--last does not apply).")
@click.option("--host", default=None, help="Only events of this host (or DNS name).")
@click.option("--device", default=None,
              help="Only events of this device: its id (as 'mdmlab enroll' printed it), user identifier or "
                   "EnrollmentID.")
@click.option("--component", type=click.Choice(COMPONENTS), default=None, help="Only events of this component.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only events of this kind.")
@click.option("--all", "everything", is_flag=True,
              help="With --last and --follow: also the console's own requests (this command's, the dashboard's), "
                   "hidden by default (--after prints every event).")
@state_dir_option
def events(following, as_json, last, after, host, device, component, kind, everything, state_dir):
    """The lab's event timeline: every HTTP exchange, DNS answer, fault change and device step."""
    client = control(state_dir)
    filters = {k: v for k, v in (("host", host), ("component", component), ("kind", kind)) if v is not None}
    filters.update(_device_filter(state_dir, device) if device else {})
    shown = (lambda e: True) if everything or component == "console" else _not_console_traffic
    try:
        top = request(client, "GET", "/api/health")["last_event_id"]
        if after is None:
            found = _newest(client, last, filters, shown)
        else:
            found, cursor = [], after
            while True:
                page = request(client, "GET", "/api/events", params={"after": cursor, "limit": MAX_PAGE, **filters})
                found.extend(page)
                if len(page) < MAX_PAGE:
                    break
                cursor = page[-1]["id"]
        if as_json and not following:
            click.echo(json.dumps(found, indent=2))
            return
        for event in found:
            _print(event, as_json)
        if following:
            follow(client, max([top, *(e["id"] for e in found)]), filters, as_json, shown)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
