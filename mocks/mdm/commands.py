"""The MDM's command queue on ServerURL (PROTOCOL.md 4; dev:sending-mdm-commands-to-a-device).

Commands are plists ``{"CommandUUID": ..., "Command": {"RequestType": ..., ...}}``. A command stays on the queue
until the device answers ``Acknowledged``, ``Error`` or ``CommandFormatError`` with its CommandUUID (Apple: "don't
consider a command accepted and executed by a device until the server receives the Acknowledged or Error status");
after ``NotNow`` the server sends nothing more on that connection and resends the command when the device polls
again (dev:handling-notnow-status-responses).
"""
from __future__ import annotations

import plistlib
import uuid

from lab.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_uuid TEXT PRIMARY KEY, enrollment_id TEXT NOT NULL, request_type TEXT NOT NULL, command BLOB NOT NULL,
    status TEXT NOT NULL, queued REAL NOT NULL, sent REAL, answered REAL, result BLOB, attempts INTEGER NOT NULL
    DEFAULT 0, seq INTEGER NOT NULL
)
"""
PENDING = ("Queued", "Sent", "NotNow")
FINAL = ("Acknowledged", "Error", "CommandFormatError")
REPORT_STATUSES = ("Idle", "NotNow", *FINAL)


class CommandQueue:
    def __init__(self, store: Store, clock):
        self.store, self.clock = store, clock

    def queue(self, enrollment_id: str, command: dict) -> str:
        command_uuid = str(uuid.uuid4()).upper()
        body = plistlib.dumps({"CommandUUID": command_uuid, "Command": command})
        with self.store.transaction() as db:
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM commands").fetchone()[0]
            db.execute("INSERT INTO commands (command_uuid, enrollment_id, request_type, command, status, queued, seq)"
                       " VALUES (?,?,?,?,?,?,?)", (command_uuid, enrollment_id, command["RequestType"], body,
                                                   "Queued", self.clock(), seq))
        return command_uuid

    def next(self, enrollment_id: str) -> tuple[str, str, bytes] | None:
        """The oldest command still pending for the enrollment, marked sent: (uuid, request type, plist)."""
        with self.store.transaction() as db:
            row = db.execute("SELECT command_uuid, request_type, command FROM commands WHERE enrollment_id = ? AND"
                             " status IN ('Queued', 'Sent', 'NotNow') ORDER BY seq LIMIT 1",
                             (enrollment_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE commands SET status = 'Sent', sent = ?, attempts = attempts + 1 WHERE command_uuid = ?",
                       (self.clock(), row["command_uuid"]))
        return row["command_uuid"], row["request_type"], row["command"]

    def record(self, enrollment_id: str, command_uuid: str, status: str, report: bytes) -> dict | None:
        """Store the device's answer to one command as it was received (the checked plist, never a re-encoding of
        it); None when the enrollment has no such command."""
        with self.store.transaction() as db:
            row = db.execute("SELECT request_type, status FROM commands WHERE command_uuid = ? AND enrollment_id = ?",
                             (command_uuid, enrollment_id)).fetchone()
            if row is None:
                return None
            if row["status"] not in FINAL:  # a repeated answer to a finished command is ignored (Apple: may happen)
                db.execute("UPDATE commands SET status = ?, answered = ?, result = ? WHERE command_uuid = ?",
                           (status, self.clock(), report, command_uuid))
        return {"request_type": row["request_type"], "previous": row["status"]}

    def request_type(self, enrollment_id: str, command_uuid: str) -> str | None:
        """The RequestType of one of the enrollment's commands, or None."""
        row = self.store.one("SELECT request_type FROM commands WHERE command_uuid = ? AND enrollment_id = ?",
                             (command_uuid, enrollment_id))
        return row["request_type"] if row else None

    def cancel(self, enrollment_id: str) -> int:
        """Drop what is still pending for an enrollment that checked out."""
        with self.store.transaction() as db:
            return db.execute("UPDATE commands SET status = 'Cancelled' WHERE enrollment_id = ? AND status IN"
                              " ('Queued', 'Sent', 'NotNow')", (enrollment_id,)).rowcount

    def listing(self, enrollment_id: str | None = None, *, results: bool = True) -> list[dict]:
        """The commands (of one enrollment), with the device's results read back unless ``results`` is False (the
        state snapshot: it never reads the stored reports, so its cost does not grow with what devices sent)."""
        columns = "command_uuid, enrollment_id, request_type, status, queued, sent, answered, attempts"
        rows = self.store.query(f"SELECT {columns}{', result' if results else ''} FROM commands"
                                + (" WHERE enrollment_id = ?" if enrollment_id else "") + " ORDER BY seq",
                                (enrollment_id,) if enrollment_id else ())
        if not results:
            return [dict(row) for row in rows]
        out = []
        for row in rows:
            item = {k: row[k] for k in row.keys() if k != "result"}
            result = plistlib.loads(row["result"]) if row["result"] else None
            item["error_chain"] = (result or {}).get("ErrorChain")
            item["result"] = _printable(result) if result else None
            out.append(item)
        return out


def _printable(value):
    """A command result as JSON can carry it: data becomes its length, dates become ISO strings."""
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
