"""Training exercises: the trainee's ticket (docs/exercises/NN-slug.md: symptom, where to look, hints) and, apart,
the instructor's guide (docs/instructor/ANSWERS.md: each exercise's scenario and answer); grading an attempt."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.events import Event
from lab.faults import guesses
from lab.scenario import Scenario, available, load

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_DIR = ROOT / "docs" / "exercises"
ANSWERS = ROOT / "docs" / "instructor" / "ANSWERS.md"
SECTIONS = ("Symptom", "What to look at", "Hints")
ANSWER = "Instructor's answer"
DEFAULTS: dict[str, Any] = {
    "https_port": 8443, "dns_port": 10053, "listen": "127.0.0.1", "ca_cert": ".mdmlab/pki/ca.pem"}


class ExerciseError(ValueError):
    pass


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    scenario: str
    sections: dict[str, str]  # the trainee's three, and the instructor's answer
    path: Path

    def briefing(self, info: dict | None = None) -> str:
        """What a trainee may see: the symptom and where to look, with the running lab's address, ports and CA
        (``info``: its lab.json) in every command; never the scenario, the hints or the answer."""
        text = (f"Exercise {self.number}: {self.title}\n\nSymptom\n{self.sections['Symptom']}\n\n"
                f"What to look at\n{self.sections['What to look at']}\n\n"
                f"Hints, one at a time, are in docs/exercises/{self.path.name}.")
        return localize(text, info) if info else text


def localize(text: str, info: dict) -> str:
    """The exercise's commands written for the default lab (127.0.0.1, DNS 10053, HTTPS 8443, .mdmlab), made
    true for the running one."""
    listen, dns_port, https_port = info["dns_address"], int(info["dns_port"]), int(info["https_port"])
    text = text.replace(f"@{DEFAULTS['listen']} -p {DEFAULTS['dns_port']}",
                        f"@{listen}" + ("" if dns_port == 53 else f" -p {dns_port}"))
    text = text.replace(f"{DEFAULTS['listen']}:{DEFAULTS['https_port']}", f"{listen}:{https_port}")
    for port in (f":{DEFAULTS['https_port']}", ":<port>"):
        text = text.replace(port, "" if https_port == 443 else f":{https_port}")
    return text.replace(DEFAULTS["ca_cert"], info["ca_cert"])


EVENTS_PRINTER = (  # one line per timeline event, as the briefings' events() shows them
    'import json, sys\nfor e in json.load(sys.stdin):\n    status = "" if e["status"] is None else e["status"]\n'
    '    print(e["id"], e["component"], e["stage"] or "-", e["method"] or "", (e["host"] or "") + (e["path"] or ""),'
    ' status, "|", e["summary"])')


def shell(info: dict, scenario: Scenario, state_dir: Path) -> str:
    """The shell definitions the briefings use ($LAB, $WK, events()), for the running lab ``info`` (its lab.json),
    to paste or ``eval "$(mdmlab exercise env)"``."""
    address = info["listen"] if ":" not in info["listen"] else f"[{info['listen']}]"
    identifier = scenario.device.identifier or scenario.users[0].identifier
    domain = identifier.split("@", 1)[1]
    lab = f"--connect-to ::{address}:{info['https_port']} --cacert {info['ca_cert']}"
    well_known = (f"https://{domain}/.well-known/com.apple.remotemanagement?user-identifier={identifier}"
                  f"&model-family={scenario.device.model_family}")
    printer = shlex.quote(EVENTS_PRINTER)
    return "\n".join([
        f"export MDMLAB_STATE_DIR={shlex.quote(str(Path(state_dir).resolve()))}",
        f"LAB={shlex.quote(lab)}",
        f"WK={shlex.quote(well_known)}",
        f"CONSOLE={shlex.quote(info['console_url'].rstrip('/'))}",
        f'events() {{ curl -s $LAB "$CONSOLE/api/events?limit=500$1" | python3 -c {printer}; }}',
    ])


def _answers() -> dict[int, tuple[str, str]]:
    """Exercise number → (scenario, answer), from the instructor's guide."""
    text = ANSWERS.read_text(encoding="utf-8")
    found = {}
    for block in re.split(r"^## (?=Exercise \d+: )", text, flags=re.M)[1:]:
        number = re.match(r"Exercise (\d+): ", block)
        scenario = re.search(r"^Scenario: (\S+)", block, re.M)
        if not number or not scenario:
            raise ExerciseError(f"{ANSWERS}: each '## Exercise NN: title' needs a 'Scenario: name' line")
        found[int(number.group(1))] = (scenario.group(1), block[scenario.end():].split("\n", 1)[-1].strip())
    return found


def parse(path: Path, answers: dict[int, tuple[str, str]] | None = None) -> Exercise:
    text = path.read_text(encoding="utf-8")
    title = re.search(r"^# Exercise (\d+): (.+)$", text, re.M)
    if not title:
        raise ExerciseError(f"{path}: needs a '# Exercise NN: title' line")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    sections = {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise ExerciseError(f"{path}: missing section(s) {', '.join(missing)}")
    number = int(title.group(1))
    answers = _answers() if answers is None else answers
    if number not in answers:
        raise ExerciseError(f"{ANSWERS} has no answer for exercise {number}")
    scenario, answer = answers[number]
    return Exercise(number, title.group(2).strip(), scenario, {**sections, ANSWER: answer}, path)


def all_exercises() -> list[Exercise]:
    answers = _answers()
    return sorted((parse(p, answers) for p in EXERCISE_DIR.glob("[0-9][0-9]-*.md")), key=lambda e: e.number)


def find(number: int) -> Exercise:
    known = all_exercises()
    for exercise in known:
        if exercise.number == number:
            if exercise.scenario not in available() or load(exercise.scenario).exercise != number:
                raise ExerciseError(f"exercise {number} names a scenario that is missing or not marked "
                                    f"exercise = {number}")
            return exercise
    raise ExerciseError(f"no exercise {number}: choose 1 to {len(known)}")


def for_trainee(trace: dict) -> dict:
    """A device's trace (``Trace.to_dict()``) as a trainee may see it: the stages, exchanges, status codes and the
    device's explanations, without the diagnosis codes (many are the very name of the fault to find)."""
    return {**trace, "diagnosis": None,
            "steps": [{**step, "code": None} if isinstance(step, dict) else step for step in trace.get("steps") or []]}


def render_for_trainee(trace) -> str:
    """``Trace.render()`` without the diagnosis code on its verdict line (``FAILED (code)``)."""
    text = trace.render()
    head, _, last = text.rpartition("\n")
    if trace.diagnosis:
        last = last.replace(f"FAILED ({trace.diagnosis})", "FAILED", 1)
    return f"{head}\n{last}" if head else last


# -- grading ------------------------------------------------------------------------------------------------------

def expected_route(scenario: Scenario) -> str:
    """How a repaired lab enrolls the exercise's device: through the ABM/ASM fallback when the exercise is about
    it (the organization's domain stays as it is, the repair is made in ABM), else the organization's domain."""
    return "abm" if scenario.expect is not None and scenario.expect.path == "abm" else "direct"


def grade(scenario: Scenario, observed: dict, os_version: str | None = None, guessed: int = 0) -> tuple[bool, str]:
    """Whether an attempt (``runner.observe`` of its events, by a device on ``os_version`` if not the ticket's)
    shows the lab repaired, and why, without naming the scenario or its fault; ``guessed``: how many fault names
    the trainee cleared, shown when more than one (a diagnosis names one)."""
    route = expected_route(scenario)
    ticket = scenario.device.os_version
    other_os = os_version is not None and os_version != ticket
    if observed["outcome"] != "enrolled":
        where = f" at {observed['stage']}" if observed.get("stage") else ""
        repaired, verdict = False, f"not repaired: a fresh enrollment still fails{where}"
    elif observed["path"] != route and other_os:
        how = "through the ABM/ASM fallback" if observed["path"] == "abm" else "through the organization's domain"
        repaired, verdict = False, (f"not graded: a device on OS {os_version} enrolled {how}, a route the ticket's "
                                    f"device does not take; enroll the ticket's device: --os-version {ticket}")
    elif observed["path"] != route:
        how = ("through the ABM/ASM fallback" if route == "abm" else "directly, through the organization's domain")
        repaired, verdict = False, (f"not repaired the way this exercise intends: the device enrolled, but it should "
                                    f"enroll {how}; undo the change that took the other route and repair what the "
                                    "ticket is about")
    else:
        repaired, verdict = True, "repaired: a fresh enrollment succeeds " + (
            "through the ABM/ASM fallback" if route == "abm" else "through the organization's domain")
    if guessed > 1:
        verdict += f" ({guessed} fault names were cleared by name before this check)"
    return repaired, verdict


def record_attempt(events, exercise: int, repaired: bool, verdict: str, who: str | None = None) -> int:
    """An attempt, as the instructor sees it in the timeline; its event id."""
    return events.record(Event(component="exercise", kind="exercise-attempt", device=who,
                               outcome="repaired" if repaired else "not-repaired",
                               summary=f"exercise {exercise} check: {verdict}"))


def attempt(lab, after: int, os_version: str | None = None) -> dict:
    """Grade the running exercise lab from its own timeline since event ``after`` (a fresh enrollment the trainee
    made since, on ``os_version`` if not the ticket's), and record the attempt for the instructor."""
    from lab.runner import observe  # the runner builds labs; imported here, where a lab already runs

    if lab.exercise is None:
        raise ExerciseError("this lab runs no exercise; start one with 'mdmlab exercise start N'")
    guessed = len(guesses(lab.events.query(component="faults", kind="fault", limit=5000)))
    repaired, verdict = grade(lab.scenario, observe(lab.events.query(after=after, limit=5000)), os_version, guessed)
    event = record_attempt(lab.events, lab.exercise, repaired, verdict)
    return {"exercise": lab.exercise, "repaired": repaired, "verdict": verdict, "event": event}
