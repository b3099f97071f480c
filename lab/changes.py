"""What was changed while the lab ran that its scenario does not say, kept so a resumed lab is the lab that stopped.

DNS records added or removed and faults armed or cleared (through the console, the CLI or the control API) are
written to ``changes.json`` in the state dir as they happen. ``mdmlab up`` without ``--fresh`` builds the lab from
its scenario, then replays them; ``--fresh`` and a reset forget them. A fault's remaining count is saved when it is
set or cleared and when the lab stops, so after a kill -9 a fault armed "for the next N requests" may come back
with a few more than it had left.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("mdmlab.changes")

FILE = "changes.json"


class RunChanges:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.dns: list[dict] = []  # {"op": "add"|"remove", "name", "type", "value"}, in order
        self.faults: list[dict] | None = None  # the armed faults after the last change; None: as the scenario armed
        self._lock = threading.Lock()
        try:
            saved = json.loads(self.path.read_text())
            self.dns, self.faults = list(saved.get("dns", [])), saved.get("faults")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:  # a damaged file costs the changes, not the lab
            log.warning("ignoring %s: %s", self.path, exc)

    def dns_changed(self, op: str, name: str, rtype: str, value: str | None) -> None:
        with self._lock:
            self.dns.append({"op": op, "name": name, "type": rtype, "value": value})
            self._save()

    def faults_changed(self, armed: list[dict]) -> None:
        with self._lock:
            self.faults = [{k: a[k] for k in ("name", "host", "remaining", "seconds")} for a in armed]
            self._save()

    def forget(self) -> None:
        with self._lock:
            self.dns, self.faults = [], None
            self.path.unlink(missing_ok=True)

    def resume(self, resolver, board) -> str:
        """Replay the saved changes on a lab just built from its scenario (a lab.dns.ZoneResolver and a
        lab.faults.FaultBoard), then keep recording theirs; what was restored, in words ("" if nothing)."""
        restored = self.replay(resolver, board)
        resolver.changes, board.on_change = self, self.faults_changed
        return restored

    def stopping(self, board) -> None:
        """The lab stops: keep what is left of faults armed at run time for the next N requests."""
        if self.faults is not None:
            self.faults_changed(board.snapshot())

    def replay(self, resolver, board) -> str:
        """Apply the saved changes; a change the lab no longer accepts (a scenario edited since) is skipped with a
        warning."""
        for change in self.dns:
            try:
                if change["op"] == "add":
                    resolver.zone.add(change["name"], change["type"], change["value"])
                else:
                    resolver.zone.remove(change["name"], change["type"], change["value"])
            except (KeyError, ValueError) as exc:
                log.warning("skipping the saved DNS change %s: %s", change, exc)
        restored = []
        if self.dns:
            restored.append(f"{len(self.dns)} DNS change(s)")
        if self.faults is not None:
            board.clear(quiet=True)
            for fault in self.faults:
                try:
                    board.set(fault["name"], fault["host"], fault["remaining"], fault["seconds"])
                except (KeyError, ValueError) as exc:
                    log.warning("skipping the saved fault %s: %s", fault, exc)
            restored.append(f"{len(board.snapshot())} armed fault(s)")
        return " and ".join(restored)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"dns": self.dns, "faults": self.faults}, indent=1) + "\n")
        os.replace(tmp, self.path)
