"""What a trainee meets in an exercise, through the lab's real DNS and TLS: exercise 13 (the MDM's certificate),
started in its default state dir (./.mdmlab-exercise) as a trainee would.

Nothing the trainee sees names the scenario or carries a code equal to a fault's name (the OpenAPI document, the
CLI's enrollment, the timeline); the faults are the instructor's (no clear-all, no set, a clear by name answers
alike whether the fault was armed and shows in the grade); the briefing's shortcuts are defined for the running lab;
`exercise check` finds the lab `exercise start` started.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from lab.launcher import fault_catalogue
from lab.net import LabResolver, lab_session
from tests.e2e.test_cli import MDMLAB, stop_lab
from tests.e2e.test_exercise_check import start_exercise

NUMBER = 13
SCENARIO = "mdm-certificate-expired"
ENROLL = ("enroll", "eliza@betterbag.test", "--password", "carry-on-2026", "--os-version", "17.5")


ROOT = Path(__file__).resolve().parents[2]


def environment() -> dict:
    """The trainee's shell: no MDMLAB_STATE_DIR, and this checkout's code and exercises whatever the directory (the
    tests run from another one; under tox the installed package has no docs/ beside it)."""
    env = {k: v for k, v in os.environ.items() if k != "MDMLAB_STATE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def exercise(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("trainee")
    state_dir = cwd / ".mdmlab-exercise"
    proc = start_exercise(NUMBER, state_dir, cwd=cwd, env=environment())
    info = json.loads((state_dir / "lab.json").read_text())
    session = lab_session(LabResolver(info["dns_address"], info["dns_port"]), info["ca_cert"])
    yield {"cwd": cwd, "state_dir": state_dir, "proc": proc, "info": info, "session": session,
           "console": info["console_url"].rstrip("/")}
    session.close()
    if proc.poll() is None:
        stop_lab(proc)


def run(lab, *args: str, state_dir: bool = True) -> subprocess.CompletedProcess:
    """The CLI as the trainee runs it from the exercise's directory (pointed at the lab, or not)."""
    env = environment() | ({"MDMLAB_STATE_DIR": str(lab["state_dir"])} if state_dir else {})
    return subprocess.run([*MDMLAB, *args], cwd=lab["cwd"], env=env, capture_output=True, text=True, timeout=60)


def fault_names_in(text: str) -> list[str]:
    return [name for name in fault_catalogue() if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]


def test_the_openapi_document_names_no_scenario(exercise):
    document = exercise["session"].get(f"{exercise['console']}/api/openapi.json", timeout=10).json()
    assert SCENARIO not in json.dumps(document)
    assert f"(exercise {NUMBER})" in document["info"]["description"]


def test_the_device_shows_its_symptom_never_a_code_that_names_a_fault(exercise):
    text = run(exercise, *ENROLL)
    assert text.returncode == 1 and "FAILED" in text.stdout and "mdm.lab.test" in text.stdout, text.stdout
    assert fault_names_in(text.stdout + text.stderr) == [], text.stdout

    as_json = run(exercise, *ENROLL, "--json")
    trace = json.loads(as_json.stdout)
    assert trace["outcome"] == "failed" and trace["explanation"] and trace["steps"]
    assert fault_names_in(as_json.stdout) == [], as_json.stdout

    session, console = exercise["session"], exercise["console"]
    device = session.get(f"{console}/api/events?component=device&limit=5000", timeout=10).json()
    assert [e for e in device if e["kind"] == "device-outcome" and e["outcome"] == "failed"]
    assert fault_names_in(json.dumps(device)) == []
    one = session.get(f"{console}/api/events/{device[-1]['id']}", timeout=10).json()
    assert fault_names_in(json.dumps(one)) == []
    events = run(exercise, "events", "--json")
    assert events.returncode == 0 and fault_names_in(events.stdout) == []


def test_the_briefings_shortcuts_are_defined_for_the_running_lab(exercise):
    info = exercise["info"]
    env = run(exercise, "exercise", "env", state_dir=False)  # the default dir, as `exercise start` used
    assert env.returncode == 0, env.stderr
    assert f"::127.0.0.1:{info['https_port']} " in env.stdout and ":8443" not in env.stdout
    script = (env.stdout + '\ncurl -s -o /dev/null -w "%{http_code}\\n" $LAB "$WK"\nevents "&component=exercise"'
              '\nevents "&limit=3" | head -3\necho "dir=$MDMLAB_STATE_DIR"')
    shell = subprocess.run(["bash", "-c", script], cwd=exercise["cwd"], env=environment(), capture_output=True,
                           text=True, timeout=60)
    lines = shell.stdout.splitlines()
    assert lines[0] == "200", shell.stdout + shell.stderr
    assert re.match(r"\d+ \w", lines[1]) and f"dir={exercise['state_dir'].resolve()}" == lines[-1], shell.stdout


def test_check_finds_the_lab_exercise_start_started_in_its_default_dir(exercise):
    broken = run(exercise, "exercise", "check", state_dir=False)
    assert broken.returncode == 1 and f"exercise {NUMBER}: not repaired: a fresh enrollment still fails" \
        in broken.stdout, broken.stdout + broken.stderr


def test_the_faults_are_the_instructors_and_a_guess_shows(exercise):
    session, console = exercise["session"], exercise["console"]
    everything = run(exercise, "fault", "clear")
    assert everything.returncode == 1 and len(everything.stderr.strip().splitlines()) == 1
    assert "clear the one fault you diagnosed, by name" in everything.stderr
    refused = session.delete(f"{console}/api/faults", timeout=10)
    assert refused.status_code == 409 and refused.json()["error"] == "exercise-clear-all"

    armed = run(exercise, "fault", "set", "well-known-404")
    assert armed.returncode == 1 and "armed" not in armed.stdout and "instructor" in armed.stderr
    refused = session.post(f"{console}/api/faults", json={"name": "well-known-404"}, timeout=10)
    assert refused.status_code == 409 and refused.json()["error"] == "exercise-faults"

    typo = run(exercise, "fault", "clear", "tls-expird")
    assert typo.returncode == 1 and "did you mean tls-expired" in typo.stderr

    guess = run(exercise, "fault", "clear", "well-known-403")
    right = run(exercise, "fault", "clear", "tls-expired")
    assert guess.returncode == right.returncode == 0
    assert guess.stdout.replace("well-known-403", "NAME") == right.stdout.replace("tls-expired", "NAME")
    assert "cleared" not in right.stdout.replace("clear ", "")
    answers = [session.delete(f"{console}/api/faults/{name}", timeout=10).json()
               for name in ("well-known-403", "tls-expired")]
    assert [a["cleared"] for a in answers] == [None, None]

    faults = session.get(f"{console}/api/events?component=faults", timeout=10).json()
    asked = [e["summary"] for e in faults if e["summary"].startswith("asked to clear fault")]
    assert asked == ["asked to clear fault well-known-403", "asked to clear fault tls-expired"] * 2

    repaired = run(exercise, "exercise", "check")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "2 fault names were cleared" in repaired.stdout
    attempts = session.get(f"{console}/api/events?component=exercise", timeout=10).json()
    assert "2 fault names were cleared" in attempts[-1]["summary"] and attempts[-1]["outcome"] == "repaired"


def test_nothing_printed_names_the_scenario(exercise):
    banner = stop_lab(exercise["proc"])
    assert SCENARIO not in banner and f"::127.0.0.1:{exercise['info']['https_port']} " in banner
    assert "eval \"$(mdmlab exercise env --state-dir" in banner
