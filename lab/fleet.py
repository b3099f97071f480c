"""A fleet of simulated devices that enroll and check in at once, against a running lab (or one elsewhere).

Each fleet device is a ``lab.device.Device``, the same strict device as ``mdmlab enroll``: its own DNS lookups, its
own TLS connections kept alive per host (one pool per host, as a device's networking stack keeps them), the four
stages, then one check-in on the command channel (an Idle poll that runs whatever the MDM queued). The fleet only
schedules devices and measures them; it never reads the lab's state.

``run`` drives the fleet from threads; ``benchmarks/locust/locustfile.py`` runs the same ``enroll_one`` as Locust
users, for more load than one machine gives. A journal (JSON lines, mode 0600: it holds the devices' tokens, as a
device's keychain would) keeps every completed enrollment, so ``recheck`` can check the same devices in again,
e.g. after the lab was killed and restarted.
"""
from __future__ import annotations

import json
import math
import os
import plistlib
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from lab import config
from lab.device import Device, messages
from lab.device.device import FAMILIES
from lab.device.model import Client
from lab.net import LabResolver, Network, lab_session

STAGES = ("discovery", "authentication", "enrollment", "check-in", "commands")
DEFAULT_MIX = {"iPhone": 100}
MAX_DEVICES = 1_000_000
MAX_CONCURRENCY = 1024
CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
SERVER_TYPE = "application/x-apple-aspen-mdm"


class FleetError(ValueError):
    """The fleet cannot run as asked; the message says why in one line."""


# -- where the fleet goes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A running lab as a device sees it (DNS server, CA, HTTPS port) and the accounts the fleet signs in with."""
    network: Network
    users: tuple[tuple[str, str], ...]  # (identifier, password)
    console: str

    @classmethod
    def from_info(cls, info: dict, users: Iterable[tuple[str, str]] = (), *, ca_cert: str | None = None,
                  dns_address: str | None = None, admin_token: str | None = None) -> Target:
        network = Network.from_lab_info(info, dns_address=dns_address, ca_cert=ca_cert)
        users = tuple(users) or _lab_accounts(network, info, admin_token)
        if not users:
            raise FleetError("no account to sign in with: the lab's scenario names none the fleet can use; "
                             "give --user IDENTIFIER:PASSWORD")
        return cls(network, users, info.get("console_url", ""))


def _lab_accounts(network: Network, info: dict, admin_token: str | None) -> tuple[tuple[str, str], ...]:
    """The running lab's test accounts with their passwords, from its control API (lab.json names users, never
    passwords), through the lab's DNS and CA like every other request of the fleet."""
    if not info.get("console_url"):
        return ()
    session = lab_session(LabResolver(network.dns_server, network.dns_port), network.ca_cert)
    if admin_token:
        session.headers["Authorization"] = f"Bearer {admin_token}"
    try:
        response = session.get(info["console_url"].rstrip("/") + "/api/accounts", timeout=10)
        response.raise_for_status()
        accounts = response.json()["accounts"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"cannot read the lab's test accounts from its console: {exc.__class__.__name__}; "
                         "give --user IDENTIFIER:PASSWORD") from None
    finally:
        session.close()
    return tuple((a["identifier"], a["password"]) for a in accounts)


def target_from_state_dir(state_dir: Path, users: Iterable[tuple[str, str]] = ()) -> Target:
    try:
        info = config.read_lab_file(state_dir)
    except config.NoLabRunning as exc:
        raise FleetError(str(exc)) from None
    token_file = Path(state_dir) / config.ADMIN_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else None
    return Target.from_info(info, users, admin_token=token)


def target_from_url(url: str, ca_cert: str, users: Iterable[tuple[str, str]] = (),
                    admin_token: str | None = None) -> Target:
    """A lab reached at ``url`` (its console, e.g. https://192.0.2.10:8443/): where its DNS is comes from its
    health document; names are resolved by that DNS at the URL's address."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FleetError(f"--against needs the lab's console URL, https://HOST[:PORT]/, got {url!r}")
    if not Path(ca_cert).is_file():
        raise FleetError(f"the lab's CA certificate {ca_cert} does not exist (mdmlab ca export on the lab's machine)")
    session = requests.Session()
    session.trust_env = False
    if admin_token:
        session.headers["Authorization"] = f"Bearer {admin_token}"
    try:
        response = session.get(f"https://{parts.netloc}/api/health", verify=ca_cert, timeout=10)
        response.raise_for_status()
        info = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise FleetError(f"cannot read the lab's health at {url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        session.close()
    address = info.get("dns_address") or parts.hostname
    return Target.from_info(info, users, ca_cert=ca_cert, dns_address=address, admin_token=admin_token)


# -- the mix of models -----------------------------------------------------------------------------------------

def parse_mix(text: str | None) -> dict[str, int]:
    """``iPhone=70,Mac=30`` → {"iPhone": 70, "Mac": 30}; weights are relative, any positive integers."""
    if not text:
        return dict(DEFAULT_MIX)
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or name not in FAMILIES or not weight.strip().isdigit() or int(weight) <= 0:
            raise FleetError(f"--mix wants MODEL=WEIGHT,... with models {', '.join(FAMILIES)} and positive "
                             f"integer weights; got {part.strip()!r}")
        if name in mix:
            raise FleetError(f"--mix names {name} twice")
        mix[name] = int(weight)
    return mix


def assign_models(count: int, mix: dict[str, int]) -> list[str]:
    """Deterministic and evenly interleaved: every prefix of the fleet is as close to the mix as it can be."""
    total = sum(mix.values())
    given = {name: 0 for name in mix}
    models = []
    for i in range(1, count + 1):
        name = max(mix, key=lambda n: (mix[n] * i / total - given[n], mix[n]))
        given[name] += 1
        models.append(name)
    return models


# -- one device ------------------------------------------------------------------------------------------------

@dataclass
class DeviceResult:
    index: int
    model_family: str
    identifier: str
    ok: bool
    cause: str | None  # the device's diagnosis, or the exception, when not ok
    stage: str | None  # where it failed
    stage_ms: dict[str, float]
    enroll_ms: float
    total_ms: float
    enrollment: dict | None = None  # what the device keeps to check in again (journal)


def _stage_times(trace, into: dict[str, float]) -> None:
    """Time the device waited on the network in each stage: the sum of its exchanges' elapsed times."""
    for step in trace.steps:
        if step.elapsed_ms is not None:
            into[step.stage] = into.get(step.stage, 0.0) + step.elapsed_ms


def _enrollment_record(device: Device) -> dict:
    e = device.enrollment
    assert e is not None  # recorded after a successful enrollment
    return {"enrollment_id": e.enrollment_id, "mode": e.mode, "topic": e.topic, "identifier": e.identifier,
            "checkin_url": e.checkin_url, "server_url": e.server_url, "access_token": e.access_token,
            "udid": device.udid, "serial": device.serial, "model_family": device.model_family,
            "os_version": device.os_version}


def enroll_one(target: Target, index: int, model_family: str, *, sync: bool = True) -> DeviceResult:
    """One device: enroll as the next account of the target, then check in once on the command channel."""
    identifier, password = target.users[index % len(target.users)]
    started = time.perf_counter()
    stage_ms: dict[str, float] = {}
    device = None
    try:
        device = Device(target.network, model_family=model_family)
        trace = device.enroll(identifier, password)
        enroll_ms = (time.perf_counter() - started) * 1000
        _stage_times(trace, stage_ms)
        if trace.outcome != "enrolled":
            failed = next((s.stage for s in reversed(trace.steps) if s.verdict == "fail"), None)
            return DeviceResult(index, model_family, identifier, False, trace.diagnosis or trace.outcome, failed,
                                stage_ms, enroll_ms, enroll_ms)
        record = _enrollment_record(device)
        if sync:
            synced = device.sync()
            _stage_times(synced, stage_ms)
            if synced.outcome != "synced":
                total = (time.perf_counter() - started) * 1000
                return DeviceResult(index, model_family, identifier, False, synced.diagnosis or synced.outcome,
                                    "commands", stage_ms, enroll_ms, total, record)
        total = (time.perf_counter() - started) * 1000
        return DeviceResult(index, model_family, identifier, True, None, None, stage_ms, enroll_ms, total, record)
    except Exception as exc:  # a device bug costs this device, never the fleet
        total = (time.perf_counter() - started) * 1000
        return DeviceResult(index, model_family, identifier, False, f"exception-{exc.__class__.__name__}", None,
                            stage_ms, total, total)
    finally:
        if device is not None:
            device.close()


# -- the report ------------------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(len(ordered) * p / 100)))
    return ordered[rank - 1]


def _latency(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": round(percentile(values, 50), 2),
            "p95_ms": round(percentile(values, 95), 2), "p99_ms": round(percentile(values, 99), 2),
            "mean_ms": round(statistics.fmean(values), 2), "max_ms": round(max(values), 2)}


@dataclass
class Report:
    devices: int
    concurrency: int
    mix: dict[str, int]
    wall_s: float = 0.0
    enrolled: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # cause → count
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    not_started: int = 0  # devices never launched because the fleet stopped
    stopped: str | None = None  # why the fleet stopped early
    _stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES}, repr=False)
    _enroll: list[float] = field(default_factory=list, repr=False)
    _total: list[float] = field(default_factory=list, repr=False)

    def add(self, result: DeviceResult) -> None:
        self.models[result.model_family] = self.models.get(result.model_family, 0) + 1
        if result.ok:
            self.enrolled += 1
            self._enroll.append(result.enroll_ms)
            self._total.append(result.total_ms)
            for stage, ms in result.stage_ms.items():
                self._stages.setdefault(stage, []).append(ms)
        else:
            self.failed += 1
            cause = result.cause or "unknown"
            self.errors[cause] = self.errors.get(cause, 0) + 1
            stage = result.stage or "unknown"
            self.errors_by_stage[stage] = self.errors_by_stage.get(stage, 0) + 1

    @property
    def rate(self) -> float:
        return self.enrolled / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict:
        return {"devices": self.devices, "concurrency": self.concurrency, "mix": self.mix, "models": self.models,
                "wall_s": round(self.wall_s, 3), "enrolled": self.enrolled, "failed": self.failed,
                "enrollments_per_s": round(self.rate, 2),
                "stages": {s: _latency(v) for s, v in self._stages.items() if v},
                "enrollment": _latency(self._enroll), "device_total": _latency(self._total),
                "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])),
                "errors_by_stage": self.errors_by_stage, "not_started": self.not_started, "stopped": self.stopped}

    def render(self) -> str:
        d = self.to_dict()
        lines = [f"{self.enrolled} of {self.devices} devices enrolled and checked in, {self.failed} failed, in "
                 f"{self.wall_s:.2f} s: {self.rate:.1f} enrollments/s (concurrency {self.concurrency}; "
                 + ", ".join(f"{m} {n}" for m, n in sorted(self.models.items())) + ")",
                 f"{'':<22}{'count':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
        rows = [(f"stage {s}", d["stages"][s]) for s in d["stages"]] + [("total: enroll (wall)", d["enrollment"]),
                                                                         ("total: device (wall)", d["device_total"])]
        for name, lat in rows:
            if lat.get("count"):
                lines.append(f"{name:<22}{lat['count']:>7}{lat['p50_ms']:>10.1f}{lat['p95_ms']:>10.1f}"
                             f"{lat['p99_ms']:>10.1f}{lat['max_ms']:>10.1f}")
        lines.append("(a stage's time is what the device waited on the network in it, TLS handshakes included; "
                     "total: enroll is the wall time of stages 1-3; total: device adds the first poll of the "
                     "command channel)")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}; {self.not_started} device(s) not started")
        if self.errors:
            lines.append("errors by cause:")
            lines += [f"  {n:>6}  {cause}" for cause, n in d["errors"].items()]
        else:
            lines.append("no errors")
        return "\n".join(lines)


# -- the fleet -------------------------------------------------------------------------------------------------

class Journal:
    """Completed enrollments, one JSON line each, appended as they complete (a kill keeps every finished line)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        records = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
        return records


def run(target: Target, devices: int, concurrency: int, mix: dict[str, int] | None = None, *,
        journal: Path | None = None, sync: bool = True, stop_after: int | None = None,
        on_result: Callable[[DeviceResult], None] | None = None) -> Report:
    """Enroll ``devices`` devices, ``concurrency`` at a time; each checks in once after enrolling.

    When ``stop_after`` devices in a row fail (default: twice the concurrency, at least 16), the lab is taken to
    be down or broken for everyone: the fleet launches no more devices and says so, instead of letting each of
    thousands of devices wait out its DNS and TCP timeouts.
    """
    stop_after = stop_after or max(16, 2 * concurrency)
    if not 1 <= devices <= MAX_DEVICES:
        raise FleetError(f"--devices must be 1 to {MAX_DEVICES}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise FleetError(f"--concurrency must be 1 to {MAX_CONCURRENCY}")
    concurrency = min(concurrency, devices)  # more workers than devices would only be reported, never used
    mix = mix or dict(DEFAULT_MIX)
    models = assign_models(devices, mix)
    report = Report(devices, concurrency, mix)
    book = Journal(journal) if journal else None
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fleet")
    pending: set = set()
    index = 0
    try:
        in_a_row = 0
        # Submit as workers free up: 10,000 queued futures would hold memory for nothing.
        while index < devices or pending:
            while index < devices and len(pending) < concurrency * 2 and report.stopped is None:
                pending.add(pool.submit(enroll_one, target, index, models[index], sync=sync))
                index += 1
            done = next(as_completed(pending))
            pending.discard(done)
            result = done.result()
            in_a_row = 0 if result.ok else in_a_row + 1
            if in_a_row >= stop_after and report.stopped is None:
                report.stopped = f"{in_a_row} devices in a row failed (last: {result.cause})"
                cancelled = {f for f in pending if f.cancel()}
                pending -= cancelled
                report.not_started = devices - index + len(cancelled)
                index = devices
            if book is not None and result.enrollment is not None:
                book.add(result.enrollment)
            result.enrollment = None
            report.add(result)
            if on_result is not None:
                on_result(result)
        pool.shutdown()
    except KeyboardInterrupt:
        # Ctrl-C: report what finished; devices in flight end on their own, uncounted
        cancelled = {f for f in pending if f.cancel()}
        report.stopped = f"interrupted (Ctrl-C); {len(pending) - len(cancelled)} device(s) in flight not counted"
        report.not_started = devices - index + len(cancelled)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        report.wall_s = time.perf_counter() - started
        if book is not None:
            book.close()
    return report


# -- checking in again -----------------------------------------------------------------------------------------

@dataclass
class RecheckReport:
    checked: int = 0
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # "TokenUpdate 401" → count

    def to_dict(self) -> dict:
        return asdict(self)


def _message(record: dict, kind: str, name: str | None, facts: dict) -> dict:
    """A message of the journaled device, with the identifiers Apple's schema allows in it (as the device does)."""
    identity = {"Topic": record["topic"], "UDID": record["udid"], "SerialNumber": record["serial"]}
    if record["mode"] != "ADDE":
        identity["EnrollmentID"] = record["enrollment_id"]
    return messages.fit(kind, name, {**facts, **identity}, Client(record["model_family"], record.get("os_version", "")),
                        record["mode"])


def recheck(target: Target, records: list[dict], concurrency: int = 8) -> RecheckReport:
    """Each journaled device checks in again with the token it kept: a TokenUpdate on CheckInURL, then an Idle
    poll on ServerURL, as after a restart of the phone; both must answer 200."""
    report = RecheckReport()
    lock = threading.Lock()

    def one(record: dict) -> list[str]:
        resolver = LabResolver(target.network.dns_server, target.network.dns_port)
        session = lab_session(resolver, target.network.ca_cert)
        failures = []
        try:
            headers = {"Authorization": f"Bearer {record['access_token']}", "User-Agent": Client.user_agent_mdm}
            for name, url, ctype, message in (
                    ("TokenUpdate", record["checkin_url"], CHECKIN_TYPE,
                     _message(record, "checkin", "TokenUpdate", {"MessageType": "TokenUpdate",
                                                                 "Token": secrets.token_bytes(32),
                                                                 "PushMagic": secrets.token_hex(16).upper()})),
                    ("Idle", record["server_url"], SERVER_TYPE, _message(record, "response", None,
                                                                         {"Status": "Idle"}))):
                try:
                    response = session.put(url, data=plistlib.dumps(message),
                                           headers={**headers, "Content-Type": ctype}, timeout=30)
                    if response.status_code != 200:
                        failures.append(f"{name} {response.status_code}")
                except requests.RequestException as exc:
                    failures.append(f"{name} {exc.__class__.__name__}")
        finally:
            session.close()
        return failures

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="recheck") as pool:
        for failures in pool.map(one, records):
            with lock:
                report.checked += 1
                if failures:
                    for failure in failures:
                        report.failures[failure] = report.failures.get(failure, 0) + 1
                else:
                    report.ok += 1
    return report
