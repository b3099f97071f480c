"""``mdmlab exercise``: start a training exercise in a state dir of its own, and grade the trainee's repair.

Nothing printed here names the exercise's scenario or fault; the instructor's guide (docs/instructor/ANSWERS.md)
has them.
"""
from __future__ import annotations

import os
import shlex
import sys

import click

from lab import config
from lab.cli.common import fail, lab_info, request
from lab.cli.up import banner, serve, start

DEFAULT_DIR = ".mdmlab-exercise"


def exercise_dir(state_dir: str | None) -> str:
    """--state-dir, else $MDMLAB_STATE_DIR, else ./.mdmlab-exercise (never ./.mdmlab: an exercise starts over in
    its dir, and the launcher refuses a dir that holds a lab's state)."""
    return state_dir or os.environ.get(config.STATE_DIR_ENV) or DEFAULT_DIR


def run_exercise(number: int, state_dir, https_port: int, dns_port: int) -> None:
    """Start the broken lab of exercise ``number`` with its faults concealed, print the briefing, serve."""
    from lab import exercises

    numbers = sorted(e.number for e in exercises.all_exercises())
    if number not in numbers:
        fail(f"no exercise {number}: the exercises are numbered {numbers[0]} to {numbers[-1]}" if numbers
             else "no exercises are installed")
    try:
        found = exercises.find(number)
    except exercises.ExerciseError as exc:
        fail(str(exc))
    directory = exercise_dir(state_dir)
    lab = start(found.scenario, directory, https_port=https_port, dns_port=dns_port, fresh=True, exercise=number)
    info = lab.describe()
    definitions = exercises.shell(info, lab.scenario, lab.state_dir)
    serve(lab, banner(lab) + "\n\n" + found.briefing(info) + "\n\n" + "\n".join([
        "In another terminal, point mdmlab at this lab and define the briefing's $LAB, $WK and events() for it",
        f"(or run: eval \"$(mdmlab exercise env --state-dir {shlex.quote(str(lab.state_dir))})\"):",
        *("  " + line for line in definitions.splitlines()),
        "Check your repair when you think it is done:",
        "  mdmlab exercise check"]))


@click.group()
def exercise():
    """Training exercises: a broken lab, its symptom, and a check of the repair."""


@exercise.command("start")
@click.argument("number", type=click.IntRange(min=1))
@click.option("--state-dir", default=None, help=f"The exercise's own state dir [default: ./{DEFAULT_DIR}].")
@click.option("--https-port", type=click.IntRange(0, 65535), default=config.DEFAULT_HTTPS_PORT, show_default=True)
@click.option("--dns-port", type=click.IntRange(0, 65535), default=config.DEFAULT_DNS_PORT, show_default=True)
def exercise_start(number, state_dir, https_port, dns_port):
    """Start exercise NUMBER and print its briefing (the symptom, where to look; never the answer)."""
    run_exercise(number, state_dir, https_port, dns_port)


def running_exercise(state_dir: str | None):
    """The running exercise lab's lab.json and scenario, or a one-line failure."""
    from lab import exercises
    from lab.scenario import load

    info = lab_info(state_dir)
    number = info.get("exercise")
    if not number:
        fail("the running lab is no exercise; start one with 'mdmlab exercise start N' and point --state-dir "
             f"or ${config.STATE_DIR_ENV} at its state dir")
    try:
        return info, load(exercises.find(number).scenario)
    except exercises.ExerciseError as exc:
        fail(str(exc))


exercise_dir_option = click.option("--state-dir", default=None, callback=lambda _c, _p, value: exercise_dir(value),
                                   help=f"The exercise's state dir [default: ${config.STATE_DIR_ENV}, else "
                                        f"./{DEFAULT_DIR}, where 'exercise start' puts it].")


@exercise.command("env")
@exercise_dir_option
def exercise_env(state_dir):
    """Print the shell definitions the briefings use ($LAB, $WK, events()) for the running exercise:
    eval "$(mdmlab exercise env)"."""
    from lab import exercises

    info, scenario = running_exercise(state_dir)
    click.echo(exercises.shell(info, scenario, state_dir))


@exercise.command("check")
@exercise_dir_option
@click.option("--os-version", default=None, help="Prove it with this OS version [default: the ticket's device].")
def exercise_check(state_dir, os_version):
    """Is the lab repaired? A fresh enrollment of the ticket's device, graded by the lab from its timeline."""
    from lab import runner
    from lab.cli.common import control
    from lab.device import Device
    from lab.net import Network

    info, scenario = running_exercise(state_dir)
    number = info["exercise"]
    client = control(state_dir)
    try:
        after = request(client, "GET", "/api/health")["last_event_id"]
        device, identifier, password = runner.device_for(scenario, Network.from_lab_info(info), Device,
                                                         os_version=os_version)
        try:
            trace = device.enroll(identifier, password)
        finally:
            device.close()
        request(client, "POST", "/api/device-traces", json={"identifier": identifier, **trace.to_dict()})
        result = request(client, "POST", "/api/exercise/attempts",
                         json={"after": after, **({"os_version": os_version} if os_version else {})})
    finally:
        client.close()
    click.echo(f"exercise {number}: {result['verdict']}")
    sys.exit(0 if result["repaired"] else 1)
