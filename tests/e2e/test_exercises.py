"""The training exercises (docs/exercises/NN-slug.md): their shape, their scenarios, and no answer leakage.

Each exercise is checked twice over: with an independent reading of the markdown (the headings the kit promises)
and with lab.exercises, the parser `mdmlab scenario run --exercise` uses. Each exercise's scenario then runs in a
lab of its own and must end where the exercise needs it (its [expect]).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import exercises, runner
from lab.device import Device
from lab.scenario import available, load

ROOT = Path(__file__).resolve().parents[2]
EXERCISE_DIR = ROOT / "docs" / "exercises"
FILES = sorted(EXERCISE_DIR.glob("[0-9][0-9]-*.md"))
SECTIONS = ("Symptom", "What to look at", "Hints")
ANSWERS = ROOT / "docs" / "instructor" / "ANSWERS.md"
FILE_NAME = re.compile(r"^(\d\d)-[a-z0-9]+(-[a-z0-9]+)*\.md$")


def read(path: Path) -> dict:
    """The exercise as the kit defines it: the trainee's file (number, title and the three sections, in order, and
    no scenario), and its scenario and answer from the instructor's guide."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    title = re.fullmatch(r"# Exercise (\d\d): (\S.*)", lines[0])
    assert title, f"{path.name}: the first line must be '# Exercise NN: <title>', got {lines[0]!r}"
    assert not any(line.startswith("Scenario:") for line in lines), \
        f"{path.name}: the trainee's file names its scenario"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings == list(SECTIONS), f"{path.name}: sections must be exactly {SECTIONS}, in order; got {headings}"
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    sections = {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    guide = ANSWERS.read_text(encoding="utf-8")
    entry = re.search(rf"^## Exercise {title.group(1)}: [^\n]*\n\nScenario: (\S+) [^\n]*\n(.*?)(?=^## Exercise |\Z)",
                      guide, re.M | re.S)
    assert entry, f"docs/instructor/ANSWERS.md has no entry for exercise {title.group(1)}"
    sections["Instructor's answer"] = entry.group(2).strip()
    return {"number": int(title.group(1)), "title": title.group(2), "scenario": entry.group(1), "sections": sections}


EXERCISES = {path.name: read(path) for path in FILES}


def forbidden_terms(scenario) -> set[str]:
    """What would give the answer away: the diagnosis code and the names of the faults the scenario arms."""
    terms = {fault.name for fault in scenario.faults}
    if scenario.expect.diagnosis:
        terms.add(scenario.expect.diagnosis)
    return terms


def test_there_are_at_least_twelve_exercises_numbered_uniquely_from_one():
    assert len(FILES) >= 12, f"only {len(FILES)} exercises in {EXERCISE_DIR}"
    numbers = [e["number"] for e in EXERCISES.values()]
    assert len(numbers) == len(set(numbers)), f"duplicate exercise numbers: {sorted(numbers)}"
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), f"numbers must run 1..N without gaps: {sorted(numbers)}"
    scenarios = [e["scenario"] for e in EXERCISES.values()]
    assert len(scenarios) == len(set(scenarios)), "two exercises share a scenario"


def test_the_scenario_files_mark_exactly_the_exercises_that_exist():
    marked = {name: load(name).exercise for name in available() if load(name).exercise is not None}
    from_docs = {e["scenario"]: e["number"] for e in EXERCISES.values()}
    assert marked == from_docs, "scenario files' `exercise` and docs/exercises disagree"


def test_the_readme_explains_how_to_use_the_kit():
    text = (EXERCISE_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("mdmlab scenario run --exercise", "mdmlab enroll", "console", "mdmlab fault clear",
                   "mdmlab exercise check"):
        assert needed in text, f"docs/exercises/README.md does not mention {needed!r}"
    for path in FILES:
        assert f"({path.name})" in text, f"docs/exercises/README.md does not link {path.name}"
    for exercise in EXERCISES.values():  # the trainee's README maps no exercise to its scenario
        assert exercise["scenario"] not in text, f"docs/exercises/README.md names {exercise['scenario']}"
    guide = ANSWERS.read_text(encoding="utf-8")
    assert guide.startswith("# Instructor's guide") and "not for trainees" in guide.splitlines()[0]


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_is_well_formed_and_does_not_leak_its_answer(name):
    exercise = EXERCISES[name]
    number, sections = exercise["number"], exercise["sections"]
    match = FILE_NAME.match(name)
    assert match and int(match.group(1)) == number, f"{name}: file number and '# Exercise {number:02d}' differ"

    assert exercise["scenario"] in available(), f"{name}: no scenario {exercise['scenario']!r}"
    scenario = load(exercise["scenario"])
    assert scenario.exercise == number, f"{name}: scenario {scenario.name} has exercise = {scenario.exercise}"
    assert scenario.expect is not None, f"{name}: scenario {scenario.name} has no [expect]"

    for section in (*SECTIONS, "Instructor's answer"):
        assert len(sections[section]) > 80, f"{name}: section {section!r} is (nearly) empty"
    hints = re.findall(r"^\d+\. ", sections["Hints"], flags=re.M)
    assert 2 <= len(hints) <= 3, f"{name}: Hints must be a numbered list of 2 or 3, found {len(hints)}"

    # the trainee's briefing (title, Symptom, What to look at) never names the cause
    briefing = {"title": exercise["title"], "Symptom": sections["Symptom"],
                "What to look at": sections["What to look at"]}
    for term in forbidden_terms(scenario):
        for part, text in briefing.items():
            assert term.lower() not in text.lower(), f"{name}: the {part} gives the answer away ({term!r})"

    answer = sections["Instructor's answer"]
    if scenario.expect.diagnosis:
        assert f"`{scenario.expect.diagnosis}`" in answer, \
            f"{name}: the answer must name the diagnosis code `{scenario.expect.diagnosis}`"
    else:  # a scenario that works: the answer names the outcome and the path the lab reports
        assert f"`{scenario.expect.outcome}`" in answer and f"`{scenario.expect.path}`" in answer, \
            f"{name}: the answer must name the outcome `{scenario.expect.outcome}` and path `{scenario.expect.path}`"
    for fix in ("Fix in the real world", "Fix in the lab", "Confirm it in the lab"):
        assert fix in answer, f"{name}: the answer has no '{fix}' part"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_cli_parser_reads_the_exercise_and_its_briefing_hides_the_answer(name):
    exercise = EXERCISES[name]
    parsed = exercises.find(exercise["number"])
    assert (parsed.number, parsed.title, parsed.scenario) == (exercise["number"], exercise["title"],
                                                             exercise["scenario"])
    briefing = parsed.briefing()
    assert exercise["sections"]["Symptom"] in briefing
    for secret in ("Instructor's answer", exercise["sections"]["Instructor's answer"][:60],
                   exercise["sections"]["Hints"][:60]):
        assert secret not in briefing, f"{name}: the briefing shows {secret!r}"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_exercise_scenario_reaches_its_expected_state(name):
    scenario = load(EXERCISES[name]["scenario"])
    result = runner.run(scenario, Device)
    assert result.passed, f"{name} ({scenario.name}): {result.mismatches}\n{result.trace}"
    if scenario.expect.outcome == "failed":
        assert result.observed["outcome"] == "failed" and result.observed["diagnosis"] == scenario.expect.diagnosis


def test_scenario_run_exercise_starts_the_broken_lab_and_prints_only_the_briefing(tmp_path):
    exercise = EXERCISES[FILES[0].name]
    command = [sys.executable, "-m", "lab", "scenario", "run", "--exercise", str(exercise["number"]),
               "--state-dir", str(tmp_path / "state"), "--https-port", "0", "--dns-port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    output = ""
    try:
        deadline = time.monotonic() + 30
        while "What to look at" not in output or "mdmlab exercise check" not in output:
            line = process.stdout.readline()
            assert line, f"mdmlab exited early ({process.poll()}):\n{output}"
            output += line
            assert time.monotonic() < deadline, f"no briefing within 30 s:\n{output}"
        assert (tmp_path / "state" / "lab.json").exists(), "the exercise's lab is not running"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
        output += rest
    assert exercise["scenario"] not in output and "mdmlab is up · exercise 1 (" in output
    assert f"Exercise {exercise['number']}: {exercise['title']}" in output
    assert exercise["sections"]["Symptom"].splitlines()[0] in output
    assert "Instructor's answer" not in output
    scenario = load(exercise["scenario"])
    for term in forbidden_terms(scenario):
        assert term not in output.split("Exercise ")[-1], \
            f"the printed briefing names {term!r}"
    assert process.returncode == 0, output


def test_the_readme_counts_the_exercises_there_are():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    counts = re.findall(r"holds (\d+) exercises", readme)
    assert counts == [str(len(FILES))], f"README.md counts {counts}, docs/exercises has {len(FILES)}"


@pytest.mark.parametrize("name", EXERCISES)
def test_a_briefing_carries_the_running_labs_port_and_no_placeholder(name):
    info = {"dns_address": "127.0.0.1", "dns_port": 10153, "https_port": 9443, "ca_cert": "/tmp/ana/pki/ca.pem"}
    briefing = exercises.find(EXERCISES[name]["number"]).briefing(info)
    assert "<port>" not in briefing and ":8443" not in briefing and "10053" not in briefing, briefing
    if "business.lab.test" in briefing:
        assert "business.lab.test:9443/" in briefing
