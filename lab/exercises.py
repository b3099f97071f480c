"""Training exercises (docs/exercises/NN-slug.md), each built on a scenario whose `exercise` is NN."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.scenario import available, load

EXERCISE_DIR = Path(__file__).resolve().parent.parent / "docs" / "exercises"
SECTIONS = ("Symptom", "What to look at", "Hints", "Instructor's answer")


class ExerciseError(ValueError):
    pass


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    scenario: str
    sections: dict[str, str]
    path: Path

    def briefing(self) -> str:
        """What a trainee may see: the symptom and where to look, never the answer."""
        return (f"Exercise {self.number}: {self.title}\n\nSymptom\n{self.sections['Symptom']}\n\n"
                f"What to look at\n{self.sections['What to look at']}\n\n"
                f"Hints are in {self.path.name}; the instructor's answer is at its end.")


def parse(path: Path) -> Exercise:
    text = path.read_text(encoding="utf-8")
    title = re.search(r"^# Exercise (\d+): (.+)$", text, re.M)
    scenario = re.search(r"^Scenario: (\S+)\s*$", text, re.M)
    if not title or not scenario:
        raise ExerciseError(f"{path}: needs '# Exercise NN: title' and 'Scenario: name' lines")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    sections = {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise ExerciseError(f"{path}: missing section(s) {', '.join(missing)}")
    return Exercise(int(title.group(1)), title.group(2).strip(), scenario.group(1), sections, path)


def all_exercises() -> list[Exercise]:
    return sorted((parse(p) for p in EXERCISE_DIR.glob("[0-9][0-9]-*.md")), key=lambda e: e.number)


def find(number: int) -> Exercise:
    for exercise in all_exercises():
        if exercise.number == number:
            if exercise.scenario not in available() or load(exercise.scenario).exercise != number:
                raise ExerciseError(f"exercise {number} names scenario {exercise.scenario!r}, which is missing "
                                    f"or not marked exercise = {number}")
            return exercise
    raise ExerciseError(f"no exercise {number} in {EXERCISE_DIR}")
