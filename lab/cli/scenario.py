"""``mdmlab scenario``: list the scenarios, run them against their expected outcome, or start an exercise."""
from __future__ import annotations

import json
import sys

import click

from lab import config
from lab.cli.common import fail, load_scenario
from lab.cli.exercise import run_exercise
from lab.scenario import ScenarioError, load


@click.group()
def scenario():
    """Scenarios reproducing field issues, each with its expected outcome."""


def exercise_running(state_dir) -> int | None:
    """The number of the exercise a running lab serves, in --state-dir/$MDMLAB_STATE_DIR or the exercise dir."""
    from lab.cli.exercise import DEFAULT_DIR

    for directory in (config.state_dir(state_dir), config.state_dir(DEFAULT_DIR)):
        try:
            number = config.read_lab_file(directory).get("exercise")
        except config.NoLabRunning:
            continue
        if number:
            return number
    return None


@scenario.command("list")
@click.option("--state-dir", default=None, help="A running exercise here closes the list.")
@click.option("--json", "as_json", is_flag=True)
def scenario_list(state_dir, as_json):
    """Every scenario with its expected outcome (closed while an exercise runs: the names give answers away)."""
    from lab.scenario import available

    running = exercise_running(state_dir)
    if running:
        fail(f"exercise {running} is running: the scenario list (names, expected diagnoses) stays closed until "
             "it stops, so it cannot give the answer away")
    rows = []
    for name in available():
        try:
            sc = load(name)
        except ScenarioError as exc:
            fail(str(exc))
        expect = sc.expect
        rows.append({"name": name, "description": sc.description,
                     "expect": None if expect is None else {k: v for k, v in vars(expect).items() if v}})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        e = row["expect"] or {}
        outcome = " ".join(str(e[k]) for k in ("outcome", "path", "stage", "diagnosis") if k in e)
        click.echo(f"{row['name']:<34} {outcome:<58} {row['description']}")


@scenario.command("run")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every scenario.")
@click.option("--exercise", type=click.IntRange(min=1), default=None,
              help="Start the broken lab of training exercise N and print its symptom (not the answer).")
@click.option("--state-dir", default=None, help="With --exercise: its own state dir [default: ./.mdmlab-exercise].")
@click.option("--https-port", type=click.IntRange(0, 65535), default=config.DEFAULT_HTTPS_PORT, show_default=True)
@click.option("--dns-port", type=click.IntRange(0, 65535), default=config.DEFAULT_DNS_PORT, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def scenario_run(names, run_all, exercise, state_dir, https_port, dns_port, as_json):
    """Start a lab per scenario, run its device, check its [expect]; exit 0 only if all pass."""
    from lab import runner
    from lab.device import Device
    from lab.launcher import LabError
    from lab.scenario import available

    if exercise is not None:
        if names or run_all:
            raise click.UsageError("--exercise runs one exercise; give no scenario names or --all with it")
        run_exercise(exercise, state_dir, https_port, dns_port)
        return
    if run_all == bool(names):
        raise click.UsageError("give scenario names or --all (not both)")
    results = []
    for name in (available() if run_all else names):
        try:
            results.append(runner.run(load_scenario(name), Device))
        except (ScenarioError, LabError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            observed = " ".join(str(r.observed[k]) for k in ("outcome", "path", "stage", "diagnosis")
                                if r.observed.get(k))
            click.echo(f"{'PASS' if r.passed else 'FAIL'}  {r.scenario:<34} {observed}")
            for mismatch in r.mismatches:
                click.echo(f"      {mismatch}")
        passed = sum(r.passed for r in results)
        click.echo(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(r.passed for r in results) else 1)
