"""The event timeline: every exchange, DNS answer and state change, in SQLite, with secrets redacted.

Tests assert on these events, never on log text; the console streams them.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import plistlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from lab import plists
from lab.store import Store

log = logging.getLogger("mdmlab.events")

SECRET_KEYS = frozenset({
    "access-token", "access_token", "refresh_token", "refresh-token", "code", "password", "token",
    "client_secret", "auth_session_token", "id_token", "payloadcontent", "unlocktoken", "code_verifier",
})
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-adm-auth-session",
                            "mdm-signature"})
# Any other name that says it carries a credential: X-API-Key, X-Auth-Token, client_secret, sessionToken, ...
_SECRET_WORDS = re.compile(r"token|secret|authoriz|passw(?:or)?d|passphrase|api[-_]?key|credential|private[-_]?key"
                           r"|session|csrf|signature|cookie", re.I)
_NOT_SECRET = re.compile(r"[-_]?(?:url|uri|type|ttl|expiry|expires(?:[-_]in)?|endpoint|hint|method|length|name)$",
                         re.I)
_BEARER = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9._~+/-]{8,}=*)(?![\w=])")


def secret_name(name) -> bool:
    """Whether a header, parameter, JSON member or plist key of this name carries a secret."""
    name = str(name).lower()
    return name in SECRET_KEYS or (bool(_SECRET_WORDS.search(name)) and not _NOT_SECRET.search(name))


EXCERPT_LIMIT = 2048

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    component TEXT NOT NULL,
    kind TEXT NOT NULL,
    host TEXT, method TEXT, path TEXT, status INTEGER,
    stage TEXT, device TEXT, summary TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    enrollment TEXT, user TEXT, message_type TEXT, outcome TEXT
);
CREATE TABLE IF NOT EXISTS retention (id INTEGER PRIMARY KEY CHECK (id = 1), dropped INTEGER NOT NULL,
    through INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_device ON events(device);
CREATE INDEX IF NOT EXISTS events_host ON events(host)
"""
# What an exchange belongs to and what it was, as columns (contract 2): the console judges from these, never from
# the summary's wording.
FIELDS = ("enrollment", "user", "message_type", "outcome")
_FIELD_INDEXES = """
CREATE INDEX IF NOT EXISTS events_enrollment ON events(enrollment);
CREATE INDEX IF NOT EXISTS events_user ON events(user);
CREATE INDEX IF NOT EXISTS events_outcome ON events(outcome) WHERE outcome IS NOT NULL
"""
# A timeline written before the fields existed: its facts, once, from what the old servers wrote.
_BACKFILL = (
    "UPDATE events SET outcome = 'lab-stopped' WHERE kind = 'lab' AND summary = 'lab stopped'",
    "UPDATE events SET message_type = substr(summary, 1, instr(summary, ' ') - 1) WHERE component = 'mdm'"
    " AND stage = 'check-in' AND kind = 'http' AND instr(summary, ' ') > 0 AND status = 200",
    "UPDATE events SET outcome = 'enrolled', enrollment = device WHERE component = 'mdm' AND kind = 'http'"
    " AND status = 200 AND message_type = 'TokenUpdate'",
    "UPDATE events SET outcome = json_extract(detail, '$.outcome') WHERE kind = 'device-outcome'",
)


def _migrate(store: Store) -> None:
    """Add the contract-2 columns to a timeline that predates them (and fill them in from its old events)."""
    have = {row["name"] for row in store.query("PRAGMA table_info(events)")}
    missing = [name for name in FIELDS if name not in have]
    with store.transaction() as db:
        for name in missing:
            db.execute(f"ALTER TABLE events ADD COLUMN {name} TEXT")
        if missing:
            for statement in _BACKFILL:
                db.execute(statement)
        for statement in filter(str.strip, _FIELD_INDEXES.split(";")):
            db.execute(statement)


def mask(value: str) -> str:
    """Keep four characters, enough to tell two tokens apart in a timeline, never enough to use one."""
    value = str(value)
    return "[redacted]" if len(value) < 12 else f"{value[:4]}…[redacted]"


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    # masks stay readable ("abcd…[redacted]"); everything else is encoded as a query would be
    return "&".join(f"{quote(k, safe='@:/')}={mask(v) if secret_name(k) else quote(v, safe='@:/')}"
                    for k, v in pairs)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=redact_query(parts.query))) if parts.query else url


COOKIE_ATTRIBUTES = frozenset({"path", "domain", "expires", "max-age", "secure", "httponly", "samesite",
                               "partitioned", "priority"})


def _redact_cookie(part: str) -> str:
    """``name=value`` keeps its name; a Set-Cookie attribute stays; anything else (no name) is masked whole."""
    name, sep, value = part.partition("=")
    if name.strip().lower() in COOKIE_ATTRIBUTES:
        return part
    if not sep:
        return mask(part) if part else part
    return f"{name}={mask(value)}"


def redact_headers(headers) -> dict[str, str]:
    out = {}
    for name, value in headers:
        lname = name.lower()
        if lname in ("cookie", "set-cookie"):
            out[name] = "; ".join(_redact_cookie(part.strip()) for part in value.split(";"))
        elif lname in SECRET_HEADERS or secret_name(lname):
            scheme, _, rest = value.partition(" ")
            out[name] = f"{scheme} {mask(rest)}" if rest else mask(value)
        elif lname == "location":
            out[name] = redact_url(value)
        elif lname == "www-authenticate":  # a challenge: its parameters are the point, never a credential
            out[name] = value
        else:
            out[name] = _redact_bearers(value)
    return out


def _redact_json(value):
    if isinstance(value, dict):
        return {k: mask(v) if secret_name(k) and isinstance(v, (str, bytes)) else _redact_json(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    return value


_NAME = r"[\w.-]{1,64}"
_QUERY_SECRET = re.compile(r"((?:^|[?&;\s\"'])(" + _NAME + r")=)([^&\"'<>\s]+)")
_JSON_SECRET = re.compile(r'("(' + _NAME + r')"\s*:\s*")((?:[^"\\]|\\.)*)')
_XML_SECRET = re.compile(r"(<key>(" + _NAME + r")</key>\s*<(?:string|data)>)([^<]*)", re.I)


def _masked_if_secret(match: re.Match) -> str:
    return match.group(1) + (mask(match.group(3)) if secret_name(match.group(2)) else match.group(3))


def _redact_bearers(text: str) -> str:
    """``Bearer <token>`` wherever it is written (a log line, an error message, a custom header)."""
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + mask(m.group(3)), text)


def _redact_text(text: str) -> str:
    """Secrets in any syntax a body may use: plist keys, JSON members, query or form parameters, bearer strings."""
    text = _XML_SECRET.sub(_masked_if_secret, text)
    text = _JSON_SECRET.sub(_masked_if_secret, text)
    text = _QUERY_SECRET.sub(_masked_if_secret, text)
    return _redact_bearers(text)


TIMELINE_PLIST_LIMITS = plists.Limits(depth=32, nodes=5_000, size=256 * 1024)  # a timeline excerpt's worth
PROFILE_LIMIT = 16384  # an unwrapped profile, its data blobs described: a few KB
SIGNED_TYPES = frozenset({"application/x-apple-aspen-config", "application/pkcs7-signature",
                          "application/pkcs7-mime"})
# keys of a profile or device-info plist whose values are secrets whatever their type (with secret_name's)
PLIST_SECRETS = frozenset({"payloadcontent", "challenge", "pushmagic"})


def _plist_secret(key: str) -> bool:
    return key.lower() in PLIST_SECRETS or secret_name(key)


def _redact_plist(value, key: str = ""):
    if isinstance(value, dict):
        return {k: _redact_plist(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_plist(v, key) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"[{len(value)} bytes of data{', redacted' if _plist_secret(key) else ''}]"
    if isinstance(value, str) and _plist_secret(key):
        return mask(value)
    return value


def readable_plist(body: bytes) -> str | None:
    """A property list as a person reads it (XML), CMS envelope opened, data blobs described, secrets masked.

    The signature is not checked here (the device's trace says whether it verified); None when the body is no
    plist, signed or not.
    """
    from lab import cms  # plumbing; imported here so the event log stays light to import

    note = ""
    if cms.looks_like_cms(body):
        try:
            from asn1crypto import cms as asn1_cms
            signed = asn1_cms.ContentInfo.load(body)["content"]
            content = signed["encap_content_info"]["content"].native
            certs = [c.chosen for c in signed["certificates"] or []]
            signer = certs[0].subject.human_friendly if len(certs) == 1 else f"{len(certs)} certificates"
        except Exception:  # asn1crypto raises many types on garbage
            return None
        if not isinstance(content, bytes):
            return None
        note, body = f"<!-- CMS SignedData ({signer}), opened by mdmlab: data described, secrets redacted -->\n", \
            content
    if not body.lstrip().startswith((b"<?xml", b"<plist", b"bplist00")):
        return None
    try:  # untrusted bytes: bounded before anything is expanded (a binary plist's objects may reference each other)
        value = plists.loads(body, TIMELINE_PLIST_LIMITS)
        text = plistlib.dumps(_redact_plist(value), sort_keys=False).decode()
        text = text[text.index("<plist"):].replace("\t", "  ")  # the XML declaration and DOCTYPE are noise here
    except Exception:  # a malformed plist stays described
        return None
    return (note + text)[:PROFILE_LIMIT]  # redacted by structure: its secrets' keys are known


def redact_body(body: bytes, content_type: str | None) -> str:
    """A printable, redacted excerpt of a body; binary bodies are described, never stored.

    The declared type is a hint, not a promise (a client may send JSON labelled as a form): every body is also
    searched for secrets in the other syntaxes.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if not body:
        return ""
    if ctype in ("application/x-www-form-urlencoded",):
        return redact_query(_redact_text(body.decode("latin-1")))[:EXCERPT_LIMIT]
    if ctype in SIGNED_TYPES or body.startswith(b"bplist00"):
        readable = readable_plist(body)
        if readable is not None:
            return readable
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes {ctype or 'binary'}>"
    if ctype.endswith("json"):
        try:
            return _redact_text(json.dumps(_redact_json(json.loads(text))))[:EXCERPT_LIMIT]
        except (ValueError, RecursionError):
            pass
    if "\x00" in text:
        return f"<{len(body)} bytes {ctype or 'binary'}>"
    return _redact_text(text)[:EXCERPT_LIMIT]


@dataclass
class Event:
    component: str
    kind: str = "http"
    host: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    stage: str | None = None
    device: str | None = None
    summary: str = ""
    detail: dict = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    enrollment: str | None = None  # the EnrollmentID (or device identity) the exchange belongs to
    user: str | None = None  # the account (Managed Apple ID / user identifier)
    message_type: str | None = None  # check-in MessageType or command RequestType
    outcome: str | None = None  # a machine-readable fact: "enrolled", "lab-stopped", "refused", ...


def device_trace_events(identifier: str, trace: dict, who: str | None = None, *, clip: bool = False) -> list[Event]:
    """A device's own account of an enrollment (``Trace.to_dict()``), as a sysdiagnose would give it: one event
    per step, then the outcome. Used for scenario runs and, with ``clip`` (outside input), for the traces
    `mdmlab enroll` sends to the console."""
    def cut(text, limit: int) -> str:
        return str(text)[:limit] if clip else str(text)

    extra = {"device": who} if who else {}
    steps = trace.get("steps") or []
    enrollment = trace.get("enrollment_id")
    enrollment = cut(enrollment, 200) if isinstance(enrollment, str) and enrollment else None
    outcome = trace.get("outcome")
    events = [Event(component="device", kind="device", stage=cut(step["stage"], 40), device=identifier,
                    summary=f"{step.get('verdict')}: {cut(step.get('action'), 300)}", user=identifier,
                    enrollment=enrollment, outcome="refused" if step.get("verdict") == "fail" else None,
                    detail={**{k: step.get(k) for k in ("verdict", "code", "explanation")}, **extra})
              for step in steps]
    # A failed run ends where its failing step is, even when clean-up steps (unenrollment) came after it.
    failed = [step for step in steps if step.get("verdict") == "fail"]
    last = failed[-1] if failed and outcome == "failed" else (steps[-1] if steps else None)
    events.append(Event(component="device", kind="device-outcome", stage=cut(last["stage"], 40) if last else None,
                        device=identifier, summary=_said_once(str(outcome), cut(trace.get("explanation"), 500)),
                        user=identifier, enrollment=enrollment,
                        outcome=cut(outcome, 40) if isinstance(outcome, str) and outcome else None,
                        detail={**{k: trace.get(k) for k in ("outcome", "diagnosis", "path")}, **extra}))
    return events


def _summary(text: str) -> str:
    """A summary as stored: a credential a client wrote into it (a trace, an error message) is masked."""
    return _redact_bearers(text) if text and ("Bearer" in text or "Basic" in text) else text


def _said_once(outcome: str, explanation: str) -> str:
    """``outcome: explanation``, unless the explanation already starts with the outcome ("enrolled with …")."""
    return explanation if explanation.lower().startswith(outcome.lower()) else f"{outcome}: {explanation}"


COALESCE_SECONDS = 0.02
FOLLOW_BATCH = 200  # events a live stream takes at once
_COLUMNS = ("id", "ts", "component", "kind", "host", "method", "path", "status", "stage", "device", "summary",
            "detail", "enrollment", "user", "message_type", "outcome")


class EventLog:
    """The timeline, written by one background thread in batches; every read sees every event recorded before it.

    ``record`` gives the event its id at once and hands it to the writer through a bounded queue (a full queue
    makes the recording request wait: back-pressure, never a lost event). The writer commits whatever has
    queued up in one transaction, so under load a commit carries many events instead of one each.
    ``query``/``last_id`` first wait until the writer has committed every event recorded so far (read your
    writes: a test asserts on the events of the request it just made). ``close`` commits what is queued.
    The writer lets events gather for up to COALESCE_SECONDS before a commit (at once when a reader waits), so a
    kill -9 can lose only the events still queued, about that much time's worth; state lives in the mocks'
    databases, written synchronously.
    """

    QUEUE_LIMIT = 10_000  # events waiting for the writer; ~2 MB at most
    BATCH_LIMIT = 500  # events per transaction
    RETAIN = 200_000  # the newest events kept; ~400 MB at most with full excerpts, usually far less
    DROP_BATCH = 1_000  # oldest events deleted per transaction, so a trim never holds the writer (or a reader) long
    FEED = 2_000  # committed events kept in memory while someone follows the timeline live (follow)

    def __init__(self, path: Path, *, retain: int | None = None):
        self.store = Store(path, _SCHEMA)
        _migrate(self.store)
        self.retain = max(1, retain or self.RETAIN)
        self._oldest = self.store.value("SELECT MIN(id) FROM events") or 1
        self._written_cond = threading.Condition()  # notified when the writer committed a batch (flush)
        self._id_lock = threading.Lock()
        row = self.store.one("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        top = self.store.value("SELECT MAX(id) FROM events") or 0
        self._last_assigned = max(top, row["seq"] if row else 0)
        self._written = self._last_assigned
        self._pending: collections.deque = collections.deque()  # (id, event), in id order
        self._wake = threading.Event()  # set when there is something for the writer
        self._hurry = threading.Event()  # set when a reader waits for the writer (flush) or the log closes
        self._room = threading.Condition(self._id_lock)  # a full queue waits here for the writer
        # The live feed: the writer's last commits as (event, its JSON), shared by every follower, so N live streams
        # cost one read of each event, not N queries; kept only while someone follows, contiguous ids.
        self._feed: collections.deque[tuple[dict, str]] = collections.deque(maxlen=self.FEED)
        self._published = threading.Condition()
        self._followers = 0
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="events-writer", daemon=True)
        self._writer.start()

    def record(self, event: Event) -> int:
        # The id is taken and the event queued under one lock, so the queue is in id order.
        with self._id_lock:
            if self._closed:
                raise RuntimeError("the event log is closed")
            while len(self._pending) >= self.QUEUE_LIMIT:
                self._room.wait(1.0)
            self._last_assigned += 1
            event_id = self._last_assigned
            self._pending.append((event_id, event))
        self._wake.set()
        return event_id

    def _write_loop(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait()
            # Let events gather for a moment (one commit for a whole exchange, not one each), unless a reader
            # is waiting for them.
            self._hurry.wait(COALESCE_SECONDS)
            self._wake.clear()
            self._hurry.clear()
            while pending:
                batch: list = []
                while pending and len(batch) < self.BATCH_LIMIT:
                    batch.append(pending.popleft())
                with self._id_lock:
                    self._room.notify_all()
                try:
                    rows = [(event_id, e.ts, e.component, e.kind, e.host, e.method, e.path, e.status, e.stage,
                             e.device, _summary(e.summary), json.dumps(e.detail, default=str), e.enrollment, e.user,
                             e.message_type, e.outcome) for event_id, e in batch]
                    with self.store.transaction() as db:
                        db.executemany(
                            f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                            rows)
                except Exception:  # a full disk costs these events, never a reader waiting forever
                    log.exception("could not write %d event(s) to the timeline", len(batch))
                    rows = []
                self._publish(rows)
                with self._written_cond:
                    self._written = batch[-1][0]
                    self._written_cond.notify_all()
                self._trim()
            if self._closed and not pending:
                return

    def _publish(self, rows: list[tuple]) -> None:
        with self._published:
            if not self._followers or not rows:  # nobody follows, or a lost batch: the feed would have a gap
                self._feed.clear()
            else:
                for row in rows:
                    event = dict(zip(_COLUMNS, row, strict=True))
                    event["detail"] = json.loads(event["detail"])
                    self._feed.append((event, json.dumps(event, separators=(",", ":"))))
            self._published.notify_all()

    @contextlib.contextmanager
    def following(self):
        """While inside, the writer keeps its commits in the live feed that ``follow`` serves."""
        with self._published:
            self._followers += 1
        try:
            yield self
        finally:
            with self._published:
                self._followers -= 1

    def follow(self, after: int, timeout: float) -> list[tuple[dict, str]] | None:
        """For a live stream (inside ``following``): up to a batch of committed events after ``after``, each with
        its JSON, waiting up to ``timeout`` for the first; [] when none came, None once the log is closed.

        Served from the feed when it reaches back to ``after``; a follower further behind reads the database,
        without hurrying the writer (what it has not committed yet will reach the feed).
        """
        deadline = time.monotonic() + timeout
        with self._published:
            while True:
                feed = self._feed
                if feed and feed[0][0]["id"] <= after + 1:
                    if feed[-1][0]["id"] > after:
                        start = after + 1 - feed[0][0]["id"]
                        return list(itertools.islice(feed, start, start + FOLLOW_BATCH))
                elif self._written > after:
                    break
                if self._closed and self._written >= self._last_assigned:  # and the writer has published all
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._published.wait(remaining)
        events = self.query(after=after, limit=FOLLOW_BATCH, settle=False)
        return [(event, json.dumps(event, separators=(",", ":"))) for event in events]

    def _trim(self) -> None:
        """Keep the newest ``retain`` events; say in the timeline how many older ones went, and up to which id.

        Ids are handed out in order and only the oldest are ever deleted, so ``written - oldest`` counts the rows
        without a COUNT over a large table; a tenth of slack lets one trim delete many rows at once.
        """
        excess = self._written - self._oldest + 1 - self.retain
        if excess <= max(1, self.retain // 10):
            return
        through = min(self._written - self.retain, self._oldest + self.DROP_BATCH - 1)
        try:
            with self.store.transaction() as db:
                dropped = db.execute("DELETE FROM events WHERE id <= ?", (through,)).rowcount
                db.execute("INSERT INTO retention (id, dropped, through) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE"
                           " SET dropped = dropped + excluded.dropped, through = excluded.through", (dropped, through))
        except Exception:
            log.exception("could not trim the timeline")
            return
        self._oldest = through + 1
        self._note(Event(component="lab", kind="retention", outcome="events-dropped", summary=(
            f"the timeline keeps the newest {self.retain} events: {dropped} older ones (through #{through}) "
            f"were dropped"), detail={"dropped": dropped, "through": through, "retain": self.retain}))

    def _note(self, event: Event) -> None:
        """Queue an event from the writer itself: it never waits for room (the writer is what makes room)."""
        with self._id_lock:
            self._last_assigned += 1
            self._pending.append((self._last_assigned, event))
        self._wake.set()

    def retention(self) -> dict:
        """How many events the retention bound has dropped so far, and the newest id it dropped."""
        row = self.store.one("SELECT dropped, through FROM retention WHERE id = 1")
        return {"retain": self.retain, "dropped": row["dropped"] if row else 0, "through": row["through"] if row else 0}

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event recorded so far is committed."""
        target = self._last_assigned
        deadline = time.monotonic() + timeout
        if self._written < target:
            self._hurry.set()
        with self._written_cond:
            while self._written < target and self._writer.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the event writer is {target - self._written} event(s) behind")
                self._written_cond.wait(remaining)

    FILTERS = ("host", "device", "component", "kind", "stage", *FIELDS)

    def query(self, *, after: int = 0, before: int | None = None, limit: int = 500, newest: bool = False,
              settle: bool = True, **filters: str | None) -> list[dict]:
        """Events with ``after < id < before`` matching every filter (a column of FILTERS), in id order.

        ``newest`` takes the page from the top of that range instead of its bottom (still returned oldest first):
        ``before=`` plus ``newest`` walks back through the timeline a page at a time. ``settle=False`` reads what is
        committed without waiting for the writer.
        """
        unknown = set(filters) - set(self.FILTERS)
        if unknown:
            raise TypeError(f"no such event filter: {', '.join(sorted(unknown))}")
        if settle:
            self.flush()
        sql = "SELECT * FROM events WHERE id > ?"
        params: list[object] = [after]
        if before is not None:
            sql += " AND id < ?"
            params.append(before)
        for column, value in filters.items():
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        sql += f" ORDER BY id {'DESC' if newest else ''} LIMIT ?"
        params.append(max(1, min(limit, 5000)))
        rows = [dict(row, detail=json.loads(row["detail"])) for row in self.store.query(sql, params)]
        return rows[::-1] if newest else rows

    def last_id(self) -> int:
        self.flush()
        return self.store.value("SELECT MAX(id) FROM events") or 0

    def close(self) -> None:
        with self._id_lock:
            if self._closed:
                return
            self._closed = True
        with self._published:
            self._published.notify_all()
        self._hurry.set()
        self._wake.set()
        self._writer.join(timeout=30)
        self.store.close()
