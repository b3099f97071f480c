"""The device's trace: every step with its stage, request, response, verdict and a plain-language explanation."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NoReturn

from lab.events import redact_headers, redact_url
from lab.protocol import STAGES

OK, WARN, FAIL = "ok", "warn", "fail"


class DeviceFailure(Exception):
    """The device gives up: ``code`` is the diagnosis, ``explanation`` says what is wrong and what to fix."""

    def __init__(self, stage: str, code: str, explanation: str):
        super().__init__(f"{stage}: {code}: {explanation}")
        self.stage, self.code, self.explanation = stage, code, explanation


@dataclass
class Step:
    stage: str
    action: str
    verdict: str
    explanation: str
    code: str | None = None
    request: dict | None = None
    response: dict | None = None
    elapsed_ms: float | None = None

    @property
    def stage_number(self) -> int:
        return STAGES[self.stage]

    def to_dict(self) -> dict:
        return {"stage": self.stage, "stage_number": self.stage_number, **{k: v for k, v in asdict(self).items()
                                                                          if k != "stage"}}


def describe_request(method: str, url: str, headers: dict | None = None) -> dict:
    return {"method": method, "url": redact_url(url), "headers": redact_headers((headers or {}).items())}


def describe_response(response) -> dict:
    return {"status": response.status_code, "headers": redact_headers(response.headers.items()),
            "bytes": len(response.content)}


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)
    outcome: str = "pending"
    path: str | None = None  # "direct" (org domain) or "abm" (the ABM/ASM fallback)
    diagnosis: str | None = None
    explanation: str | None = None
    started: float = field(default_factory=time.perf_counter)
    elapsed_ms: float = 0.0

    def add(self, stage: str, action: str, verdict: str, explanation: str, *, code: str | None = None,
            request: dict | None = None, response=None, elapsed: float | None = None) -> Step:
        step = Step(stage, action, verdict, explanation, code, request,
                    describe_response(response) if response is not None and not isinstance(response, dict)
                    else response, round(elapsed * 1000, 2) if elapsed is not None else None)
        self.steps.append(step)
        return step

    def stop(self, stage: str, code: str, explanation: str, action: str = "stop", **exchange) -> NoReturn:
        """Trace a failed step (with its request, response, elapsed if given) and give up with that diagnosis."""
        self.add(stage, action, FAIL, explanation, code=code, **exchange)
        raise DeviceFailure(stage, code, explanation)

    def fail(self, failure: DeviceFailure) -> None:
        self.outcome, self.diagnosis, self.explanation = "failed", failure.code, failure.explanation
        self._finish()

    def succeed(self, explanation: str, outcome: str = "enrolled") -> None:
        self.outcome, self.explanation = outcome, explanation
        self._finish()

    def _finish(self) -> None:
        self.elapsed_ms = round((time.perf_counter() - self.started) * 1000, 2)

    @property
    def warnings(self) -> list[Step]:
        return [s for s in self.steps if s.verdict == WARN]

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "path": self.path, "diagnosis": self.diagnosis,
                "explanation": self.explanation, "elapsed_ms": self.elapsed_ms,
                "steps": [s.to_dict() for s in self.steps]}

    def render(self) -> str:
        lines, current = [], None
        for step in self.steps:
            if step.stage != current:
                current = step.stage
                lines.append(f"Stage {step.stage_number} · {step.stage}")
            mark = {OK: "✓", WARN: "!", FAIL: "✗"}[step.verdict]
            lines.append(f"  {mark} {step.action}")
            if step.verdict != OK or step.code:
                lines.append(f"      {step.explanation}")
        verdict = f"FAILED ({self.diagnosis})" if self.outcome == "failed" else self.outcome.upper()
        if self.path == "abm":
            verdict += " via ABM/ASM"
        lines.append(f"{verdict} in {self.elapsed_ms:.0f} ms: {self.explanation}")
        return "\n".join(lines)
