"""Training exercises: a broken lab and its symptom, never its answer."""
from __future__ import annotations

from lab.cli.common import fail
from lab.cli.up import banner, serve, start


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
    lab = start(found.scenario, state_dir, https_port=https_port, dns_port=dns_port, fresh=True,
                conceal_faults=True)
    serve(lab, banner(lab) + "\n\n" + found.briefing())
