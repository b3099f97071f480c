"""lab.changes: run-time DNS and fault changes kept for a resumed lab, replayed in order, never fatal."""
from __future__ import annotations

import json

from lab.changes import RunChanges
from lab.dns import Zone, ZoneResolver
from lab.faults import FaultBoard
from lab.launcher import fault_catalogue


def fresh(tmp_path):
    zone = Zone(["betterbag.test"])
    zone.add("betterbag.test", "A", "127.0.0.1")
    board = FaultBoard(fault_catalogue(), {"org-domain": {"betterbag.test"}}, "betterbag.test")
    return ZoneResolver(zone, faults=board), board


def test_changes_replay_in_order_on_the_scenarios_lab(tmp_path):
    path = tmp_path / "changes.json"
    resolver, board = fresh(tmp_path)
    assert RunChanges(path).resume(resolver, board) == ""
    resolver.add("www.betterbag.test", "A", "127.0.0.2")
    resolver.remove("www.betterbag.test", "A")
    resolver.add("www.betterbag.test", "A", "127.0.0.3")
    resolver.remove("betterbag.test", "A")
    resolver.remove("nothing.betterbag.test", "A")  # changed nothing: not recorded
    board.set("well-known-404", times=2)

    resolver, board = fresh(tmp_path)
    assert RunChanges(path).resume(resolver, board) == "4 DNS change(s) and 1 armed fault(s)"
    assert [(r["name"], r["value"]) for r in resolver.zone.listing()] == [("www.betterbag.test", "127.0.0.3")]
    assert [(a["name"], a["remaining"]) for a in board.snapshot()] == [("well-known-404", 2)]


def test_a_damaged_or_outdated_file_costs_the_changes_not_the_lab(tmp_path):
    path = tmp_path / "changes.json"
    path.write_text("{not json")
    resolver, board = fresh(tmp_path)
    assert RunChanges(path).resume(resolver, board) == ""
    path.write_text(json.dumps({"dns": [{"op": "add"}], "faults": [{"name": "no-such-fault", "host": None,
                                                                    "remaining": None, "seconds": None}]}))
    resolver, board = fresh(tmp_path)
    assert RunChanges(path).resume(resolver, board) == "1 DNS change(s) and 0 armed fault(s)"
    assert board.snapshot() == []


def test_forget_starts_over_from_the_scenario(tmp_path):
    path = tmp_path / "changes.json"
    resolver, board = fresh(tmp_path)
    changes = RunChanges(path)
    changes.resume(resolver, board)
    board.set("well-known-404")
    changes.forget()
    again = RunChanges(path)
    assert not path.exists() and (again.dns, again.faults) == ([], None)
