"""Faults: named, documented, deterministic breakages, each with its clear.

One record per fault (``FaultSpec``) carries everything about it: its name, the component that applies it, where
inside that component it applies (``at``), what it does (``apply``), what the lab does and what the field sees.

- **Registering.** Each component registers its own records in its ``faults.py`` with a ``FaultRegistry``::

      fault = FaultRegistry("org-domain")

      @fault("json-as-html", at="well-known", description="the right JSON, served as text/html", symptom="...")
      def _(answer: WellKnownAnswer) -> Broken:
          ...

  ``fault.specs`` is the component's list (``FAULTS``). One hook may carry several names (stack the decorators).
  ``mocks.FAULTS`` joins the mocks' lists; the launcher joins them once with ``DNS_FAULTS`` (``lab.dns``) and
  ``TLS_FAULTS`` (here) through ``catalogue(...)``, from which the CLI, the console and the README table come.
- **Arming.** ``FaultBoard.set(name, host, times, seconds)``: for one host, for every request or the next N.
  ``clear`` takes them back. Never random.
- **Applying.** The component asks ``board.take(component, host, at=...)`` at the place named by ``at``; it gets the
  ``Armed`` fault (one use consumed, arrival order) or None, and calls ``armed.apply(answer)``, which is
  ``spec.apply`` with the signature its component defines (org domain: ``WellKnownAnswer → Broken``; DNS:
  ``DNSAnswer → DNSAnswer``; TLS: ``issue(pki, host) → Leaf``; MDM and ABM: see their ``faults.py``).
  ``board.peek(...)`` looks without consuming (what ``dns list`` shows).
- **Telling.** Every human-readable word about a fault comes from the board: ``board.label(armed)`` for the
  timeline summary of a broken exchange and ``board.say(message, armed)`` for an error message. In exercise mode
  (``board.concealed``) neither names the fault, and ``armed()`` lists nothing: the trainee has to find it.
"""
from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from lab.events import Event, EventLog
from lab.pki import CertificateAuthority

GUESS = "cleared_by_name"  # the detail key of a trainee's clear, counted by the exercise's grading
EXERCISE_CLEAR_ALL = ("an exercise does not clear every fault at once: clear the one fault you diagnosed, by name "
                      "('mdmlab fault clear NAME'), or repair what the symptom points to")
EXERCISE_SET = ("in an exercise the faults are the instructor's: repair what the symptom points to, then run "
                "'mdmlab exercise check'")


def guesses(events: list[dict]) -> list[str]:
    """The distinct fault names a trainee asked to clear, in order, from the timeline's fault events."""
    return list(dict.fromkeys(e["detail"][GUESS] for e in events
                              if e.get("kind") == "fault" and GUESS in (e.get("detail") or {})))


class FaultError(ValueError):
    """A fault request that cannot be honoured; ``code`` is machine-readable."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FaultSpec:
    name: str
    component: str  # who applies it: "dns", "tls", "org-domain", ...
    description: str  # what the lab does
    symptom: str  # what the field sees
    takes_seconds: bool = False
    at: str | None = None  # where inside the component it applies (None: the component's one place)
    apply: Callable | None = field(default=None, compare=False, repr=False)  # what it does (see the docstring)


class FaultRegistry:
    """A component's fault records, registered with ``@registry(name, at=..., description=..., symptom=...)``."""

    def __init__(self, component: str):
        self.component = component
        self.specs: list[FaultSpec] = []

    def __call__(self, name: str, *, description: str, symptom: str, at: str | None = None,
                 takes_seconds: bool = False):
        def register(hook: Callable) -> Callable:
            if any(s.name == name for s in self.specs):
                raise ValueError(f"fault {name} is registered twice")
            self.specs.append(FaultSpec(name, self.component, description, symptom, takes_seconds, at, hook))
            return hook
        return register

    def places(self) -> dict[str | None, tuple[str, ...]]:
        """Fault names by the place they apply at (None: the component's one place)."""
        places: dict[str | None, tuple[str, ...]] = {}
        for spec in self.specs:
            places[spec.at] = (*places.get(spec.at, ()), spec.name)
        return places


@dataclass
class Armed:
    spec: FaultSpec
    host: str
    remaining: int | None  # None: until cleared
    seconds: float | None = None
    used: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def apply(self, *args, **kwargs):
        """What the fault does to the answer its component hands over (``spec.apply``)."""
        return self.spec.apply(*args, **kwargs)

    def to_dict(self) -> dict:
        return {"name": self.spec.name, "component": self.spec.component, "host": self.host,
                "remaining": self.remaining, "used": self.used, "seconds": self.seconds}


# -- the TLS faults: each issues the certificate the host presents instead of its own ---------------------------
tls_fault = FaultRegistry("tls")
UNTRUSTED_CA_NAME = "mdmlab UNTRUSTED CA (TLS fault)"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@tls_fault("tls-expired", description="the host presents a certificate that expired yesterday",
           symptom="'Cannot connect to server' after a certificate renewal was missed")
def _expired(pki, host: str):
    return pki.issue_server(host, not_before=_now() - dt.timedelta(days=30), not_after=_now() - dt.timedelta(days=1),
                            tag="expired")


@tls_fault("tls-not-yet-valid", description="the host presents a certificate valid from tomorrow",
           symptom="works on some devices only: a wrong clock on the server or the device")
def _not_yet_valid(pki, host: str):
    return pki.issue_server(host, not_before=_now() + dt.timedelta(days=1), not_after=_now() + dt.timedelta(days=60),
                            tag="not-yet-valid")


@tls_fault("tls-wrong-name", description="the host presents a certificate for another name",
           symptom="certificate name mismatch: a shared host or CDN serves its default certificate")
def _wrong_name(pki, host: str):
    suffix = max((s for s in pki.suffixes if host == s or host.endswith("." + s)), key=len, default=pki.suffixes[0])
    return pki.issue_server(f"other.{suffix}", tag=f"for-{host}")


@tls_fault("tls-untrusted", description="the host presents a certificate from a CA the device does not trust",
           symptom="untrusted certificate: a self-signed or private CA, or a TLS-inspecting proxy")
def _untrusted(pki, host: str):
    # leaf only, as a private CA or inspecting proxy sends it: "unable to get local issuer"
    untrusted = CertificateAuthority(pki.directory / "untrusted", pki.suffixes, name=UNTRUSTED_CA_NAME)
    return untrusted.issue_server(host, tag="untrusted", with_root=False)


TLS_FAULTS = tls_fault.specs


class TLSFaults:
    """The listener's override (``HostContexts.override``): host → the TLS context of an armed TLS fault, or None.

    ``context(cert_path, key_path)`` builds a server context; each (host, fault) is issued once and kept.
    """

    def __init__(self, board: FaultBoard, pki, context: Callable):
        self.board, self.pki, self.context = board, pki, context
        self._issued: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str):
        armed = self.board.take("tls", host)
        if armed is None:
            return None
        key = (host, armed.name)
        with self._lock:
            if key not in self._issued:
                leaf = armed.apply(self.pki, host)
                self._issued[key] = self.context(leaf.cert_path, leaf.key_path)
            return self._issued[key]


@dataclass
class FaultBoard:
    catalogue: dict[str, FaultSpec]
    hosts: dict[str, set[str]]  # component → hosts a fault of that component may target ("*": any in zone)
    default_host: str
    events: EventLog | None = None
    default_hosts: dict[str, str] = field(default_factory=dict)  # per component, else default_host
    concealed: bool = False  # training exercises: the lab must not name the fault the trainee has to find
    on_change: Callable[[list[dict]], None] | None = None  # told the armed faults after each set or clear
    _armed: list[Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spec(self, name: str) -> FaultSpec:
        if name not in self.catalogue:
            raise FaultError(f"no fault named {name!r}; 'mdmlab fault list' shows them", "unknown-fault")
        return self.catalogue[name]

    def set(self, name: str, host: str | None = None, times: int | None = None,
            seconds: float | None = None) -> Armed:
        spec = self.spec(name)
        host = (host or self.default_hosts.get(spec.component, self.default_host)).lower().rstrip(".")
        allowed = self.hosts.get(spec.component, set())
        if "*" not in allowed and host not in allowed:
            raise FaultError(f"{name} applies to {spec.component} hosts ({', '.join(sorted(allowed))}), "
                             f"not {host}", "bad-fault-host")
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise FaultError("times must be a positive integer (leave it out for 'until cleared')", "bad-times")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds <= 120):
            raise FaultError("seconds must be a number between 0 and 120", "bad-seconds")
        if seconds is not None and not spec.takes_seconds:
            delays = ", ".join(sorted(n for n, s in self.catalogue.items() if s.takes_seconds))
            raise FaultError(f"{name} takes no delay; seconds applies to {delays}", "bad-seconds")
        armed = Armed(spec, host, times, float(seconds) if seconds is not None else None)
        with self._lock:
            self._armed = [a for a in self._armed if not (a.spec.name == name and a.host == host)]
            self._armed.append(armed)
        self._record(f"fault {name} set on {host}" + (f" for the next {times} requests" if times else ""), armed)
        self._changed()
        return armed

    def clear(self, name: str | None = None, host: str | None = None, *, quiet: bool = False) -> int:
        if name is not None:
            self.spec(name)
        host = host.lower().rstrip(".") if host else None
        with self._lock:
            keep = [a for a in self._armed if not ((name is None or a.spec.name == name)
                                                   and (host is None or a.host == host))]
            cleared = len(self._armed) - len(keep)
            self._armed = keep
        if not quiet:
            self._record(f"cleared {cleared} fault(s)" + (f" named {name}" if name else "") +
                         (f" on {host}" if host else ""), None)
            self._changed()
        return cleared

    def clear_guess(self, name: str | None, host: str | None = None) -> None:
        """A trainee's clear in an exercise: only by the name they diagnosed (a clear-all would repair without a
        diagnosis), answered alike whether it was armed or not, and recorded so the instructor sees each guess."""
        if name is None:
            raise FaultError(EXERCISE_CLEAR_ALL, "exercise-clear-all")
        self.spec(name)
        self.clear(name, host, quiet=True)
        if self.events is not None:
            self.events.record(Event(component="faults", kind="fault", summary=f"asked to clear fault {name}"
                                     + (f" on {host}" if host else ""), detail={GUESS: name}))
        self._changed()

    def refuse_set(self) -> NoReturn:
        """In an exercise the faults are the instructor's: arming one would only hide the one to find."""
        raise FaultError(EXERCISE_SET, "exercise-faults")

    def snapshot(self) -> list[dict]:
        """The armed faults, whatever the board conceals (for the lab's own records, never for a client)."""
        with self._lock:
            return [a.to_dict() for a in self._armed]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.snapshot())

    def _find(self, component: str, host: str, at: str | None, names) -> Armed | None:
        host = host.lower().rstrip(".")
        for armed in self._armed:
            if armed.spec.component == component and armed.host == host \
                    and (at is None or armed.spec.at == at) and (names is None or armed.spec.name in names):
                return armed
        return None

    def take(self, component: str, host: str, names=None, *, at: str | None = None) -> Armed | None:
        """The first armed fault of ``component`` on ``host`` that applies ``at`` that place (and is among
        ``names`` if given), with one use consumed; the caller applies it (``armed.apply``)."""
        with self._lock:
            armed = self._find(component, host, at, names)
            if armed is not None:
                armed.used += 1
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
            return armed

    def peek(self, component: str, host: str, *, at: str | None = None) -> Armed | None:
        """What ``take`` would hand over, without consuming a use (to show what a fault does)."""
        with self._lock:
            return self._find(component, host, at, None)

    def armed_on(self, component: str) -> list[Armed]:
        """The armed faults of ``component``, for the component to show what they do (never their names: those go
        through ``name``/``say``)."""
        with self._lock:
            return [a for a in self._armed if a.spec.component == component]

    def armed(self) -> list[dict]:
        return [] if self.concealed else self.snapshot()

    def label(self, armed: Armed) -> str:
        """How an exchange broken by ``armed`` is summarised in the timeline."""
        if self.concealed:
            return "answered"
        left = "" if armed.remaining is None else f", {armed.remaining} left"
        return f"fault {armed.spec.name}{left}"

    def say(self, message: str, armed: Armed | None) -> str:
        """``message`` about an answer ``armed`` broke, naming the fault unless it is concealed."""
        if armed is None or self.concealed:
            return message
        return f"{message} (fault {armed.spec.name})"

    def name(self, armed: Armed | None) -> str | None:
        """The fault's name where a record shows it (e.g. ``dns list``), or None when concealed."""
        return None if armed is None or self.concealed else armed.spec.name

    def listing(self) -> list[dict]:
        return [{"name": s.name, "component": s.component, "description": s.description, "symptom": s.symptom,
                 "takes_seconds": s.takes_seconds} for s in self.catalogue.values()]

    def _record(self, summary: str, armed: Armed | None) -> None:
        if self.concealed:
            summary, armed = "fault settings changed (concealed for the exercise)", None
        if self.events is not None:
            self.events.record(Event(component="faults", kind="fault", host=armed.host if armed else None,
                                     summary=summary, detail=armed.to_dict() if armed else {}))


def catalogue(*groups: list[FaultSpec]) -> dict[str, FaultSpec]:
    joined: dict[str, FaultSpec] = {}
    for group in groups:
        for spec in group:
            if spec.name in joined:
                raise ValueError(f"fault {spec.name} is defined twice")
            joined[spec.name] = spec
    return joined
