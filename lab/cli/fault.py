"""``mdmlab fault``: break the lab the way the field breaks (list, set, clear named faults)."""
from __future__ import annotations

import json

import click

from lab import config
from lab.cli.common import call, fail, nearest, state_dir_option


def catalogue() -> list[dict]:
    """Every fault a lab can arm, from the launcher (the CLI reaches the mocks' faults only through it)."""
    from lab.launcher import fault_catalogue

    return [{"name": f.name, "component": f.component, "description": f.description, "symptom": f.symptom,
             "takes_seconds": f.takes_seconds} for f in fault_catalogue().values()]


def fault_table() -> str:
    """The README's fault table, generated from the catalogue so the two cannot drift."""
    rows = ["| fault | layer | what the lab does | field symptom it reproduces |", "| --- | --- | --- | --- |"]
    rows += [f"| `{f['name']}` | {f['component']} | {f['description']} | {f['symptom']} |" for f in catalogue()]
    return "\n".join(rows)


@click.group()
def fault():
    """Break the lab the way the field breaks: list, set and clear named faults."""


@fault.command("list")
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
def fault_list(state_dir, as_json):
    """Every fault with what it does and the field symptom it reproduces; armed ones when a lab runs."""
    try:
        config.read_lab_file(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        listing, armed, offline = catalogue(), [], str(exc)
    else:
        offline = None
        answer = call(state_dir, "GET", "/api/faults")
        listing, armed = answer["catalogue"], answer["armed"]
    if as_json:
        click.echo(json.dumps({"catalogue": listing, "armed": armed}, indent=2))
    for f in [] if as_json else listing:
        on = [a for a in armed if a["name"] == f["name"]]
        mark = " [armed on " + ", ".join(_armed(a) for a in on) + "]" if on else ""
        click.echo(f"{f['name']:<22} {f['component']:<11} {f['description']}{mark}")
        click.echo(f"{'':<34} field symptom: {f['symptom']}")
    if offline:
        fail(f"{offline}; the faults above can be armed once it runs")


def _armed(armed: dict) -> str:
    """Where a fault is armed and how: ``host ×N`` for the next N requests, ``+Ns`` for its delay."""
    return (armed["host"] + ("" if armed.get("remaining") is None else f" ×{armed['remaining']}")
            + ("" if armed.get("seconds") is None else f" +{armed['seconds']:g}s"))


@fault.command("table", hidden=True)
def fault_table_command():
    """Print the README's fault table (markdown)."""
    click.echo(fault_table())


@fault.command("set")
@click.argument("name")
@click.option("--host", default=None, help="Host or DNS name to break [default: the organization's first domain].")
@click.option("--times", type=click.IntRange(min=1), default=None, help="Only the next N requests.")
@click.option("--seconds", type=click.FloatRange(0, 120), default=None, help="Delay for slow faults.")
@state_dir_option
def fault_set(name, host, times, seconds, state_dir):
    """Arm fault NAME (not in an exercise: its faults are the instructor's)."""
    if in_exercise(state_dir):
        from lab.faults import EXERCISE_SET

        fail(EXERCISE_SET)
    specs = {f["name"]: f for f in call(state_dir, "GET", "/api/faults")["catalogue"]}
    if name not in specs:
        fail(nearest(name, specs, "fault") + f" ('mdmlab fault list{config.state_dir_flag(state_dir)}' shows them all)")
    if seconds is not None and not specs[name].get("takes_seconds"):
        delays = ", ".join(n for n, f in specs.items() if f.get("takes_seconds"))
        raise click.BadParameter(f"{name} takes no delay; --seconds applies to {delays}", param_hint="--seconds")
    body = {"name": name, **({"host": host} if host else {}), **({"times": times} if times else {}),
            **({"seconds": seconds} if seconds is not None else {})}
    armed = call(state_dir, "POST", "/api/faults", json=body)["armed"]
    scope = "until cleared" if armed["remaining"] is None else f"for the next {armed['remaining']} request(s)"
    click.echo(f"armed {armed['name']} on {armed['host']} {scope}")


@fault.command("clear")
@click.argument("name", required=False)
@click.option("--host", default=None)
@state_dir_option
def fault_clear(name, host, state_dir):
    """Clear fault NAME, or every fault (in an exercise: only the one you diagnosed, by name)."""
    exercise = in_exercise(state_dir)
    if exercise and not name:
        from lab.faults import EXERCISE_CLEAR_ALL

        fail(EXERCISE_CLEAR_ALL)
    if name:
        names = [f["name"] for f in catalogue()]
        if name not in names:
            fail(nearest(name, names, "fault") + f" ('mdmlab fault list{config.state_dir_flag(state_dir)}' shows them "
                 "all)")
    path = "/api/faults" + (f"/{name}" if name else "")
    cleared = call(state_dir, "DELETE", path, params={"host": host} if host else None)["cleared"]
    if exercise:  # whether it was armed is for 'mdmlab exercise check' to show, not for names to be tried
        click.echo(f"asked the lab to clear {name}" + (f" on {host}" if host else "")
                   + "; 'mdmlab exercise check' says whether the lab is repaired")
    else:
        click.echo(f"cleared {cleared} fault(s)")


def in_exercise(state_dir) -> bool:
    """Whether the running lab (its lab.json) is a training exercise."""
    try:
        return bool(config.read_lab_file(config.state_dir(state_dir)).get("exercise"))
    except config.NoLabRunning:
        return False
