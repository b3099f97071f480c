"""A lab's state directory: one lab at a time (its lock), what a fresh start forgets, and lab.json, which tells
every other command where the running lab is."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import TextIO

from lab.changes import FILE as CHANGES_FILE
from lab.config import ADMIN_TOKEN_FILE, LAB_FILE
from lab.pki import write_private
from lab.store import owner_only_dir

EXERCISE_MARK = "exercise"  # this dir belongs to a training exercise, which may start it over
OWNED = ("pki", "mdm", "abm", "org_domain", "events.db", "events.db-wal", "events.db-shm", LAB_FILE, EXERCISE_MARK,
         CHANGES_FILE)


class StateDirBusy(RuntimeError):
    pass


class StateDir:
    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._lock_file: TextIO | None = None

    def lock(self) -> None:
        owner_only_dir(self.path)
        self._lock_file = lock_file = open(self.path / "lab.lock", "w")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            self._lock_file = None
            raise StateDirBusy(f"another lab is running on the state dir {self.path}; "
                               "stop it or use --state-dir") from None

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def prepare(self, *, fresh: bool, exercise: int | None) -> None:
        """Forget the saved state when ``fresh``; an exercise starts over only in a dir of its own (never in a
        lab's state: its CA, timeline and enrollments, and the phones that trust that CA)."""
        if exercise is not None and self.holds_lab() and not (self.path / EXERCISE_MARK).exists():
            raise StateDirBusy(f"{self.path} holds a lab's state (CA, timeline, enrollments), which an exercise "
                               "never overwrites; give the exercise a state dir of its own (--state-dir)")
        if fresh:
            self.wipe()
        owner_only_dir(self.path)
        if exercise is not None:
            (self.path / EXERCISE_MARK).write_text(f"{exercise}\n")

    def holds_lab(self) -> bool:
        return any((self.path / name).exists() for name in ("pki", "events.db", "mdm"))

    def wipe(self, names=OWNED) -> None:
        for name in names:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def publish(self, info: dict, admin_token: str | None) -> None:
        """Write lab.json (atomically) and, beyond loopback, the admin token beside it."""
        if admin_token:
            write_private(self.path / ADMIN_TOKEN_FILE, admin_token.encode())
        path = self.path / LAB_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, path)

    def withdraw(self) -> None:
        """The lab stopped: lab.json and the admin token go, the lock is released."""
        (self.path / LAB_FILE).unlink(missing_ok=True)
        (self.path / ADMIN_TOKEN_FILE).unlink(missing_ok=True)
        self.unlock()
