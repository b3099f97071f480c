"""The launcher builds the graph and nothing else: its size, the lines it must not cross, its state dir."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.launcher import Lab, LabError
from lab.protocol import ENROLLMENT_STAGES, STAGES
from lab.scenario import load
from lab.statedir import StateDir, StateDirBusy
from tests.test_net import imports

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ("launcher.py", "scenario.py", "runner.py", "exercises.py", "setups.py", "statedir.py")


def test_the_launcher_stays_small():
    assert len((ROOT / "lab" / "launcher.py").read_text().splitlines()) <= 250


@pytest.mark.parametrize("name", LAUNCHER)
def test_the_launcher_imports_neither_the_device_nor_the_cli(name):
    crossed = {m for m in imports(ROOT / "lab" / name) if m.startswith(("lab.device", "lab.cli", "lab.control"))}
    assert not crossed, f"{name} imports {crossed}"


@pytest.mark.parametrize("name", ("fleet.py", "probe.py"))
def test_tools_reach_a_lab_through_lab_json_and_the_control_api(name):
    crossed = {m for m in imports(ROOT / "lab" / name) if m in ("lab.launcher", "lab.scenario", "lab.runner")}
    assert not crossed, f"{name} imports {crossed}"


def test_one_stage_vocabulary():
    assert ENROLLMENT_STAGES == ("identifier", "discovery", "authentication", "enrollment", "check-in")
    assert list(STAGES)[:5] == list(ENROLLMENT_STAGES)
    assert "STAGES = (" not in (ROOT / "lab" / "scenario.py").read_text()


def test_the_lab_hands_out_its_test_accounts_to_the_fleet_over_its_control_api(lab):
    from lab.fleet import Target

    target = Target.from_info(json.loads((lab.state_dir / "lab.json").read_text()))
    assert set(target.users) == {(u.identifier, u.password) for u in lab.scenario.users}


def test_an_exercise_never_overwrites_a_labs_state(tmp_path):
    home = StateDir(tmp_path / "mine")
    (home.path / "pki").mkdir(parents=True)
    (home.path / "pki" / "ca.pem").write_text("my CA")
    with pytest.raises(StateDirBusy, match="never overwrites"):
        home.prepare(fresh=True, exercise=6)
    assert (home.path / "pki" / "ca.pem").read_text() == "my CA"
    with pytest.raises(LabError, match="never overwrites"):
        Lab(load("betterbag"), home.path, exercise=6, fresh=True).start()
    assert (home.path / "pki" / "ca.pem").read_text() == "my CA"


def test_an_exercise_dir_may_start_over_and_a_lab_dir_still_may_with_fresh(tmp_path):
    home = StateDir(tmp_path / "ex")
    home.prepare(fresh=True, exercise=6)
    (home.path / "pki").mkdir()
    home.prepare(fresh=True, exercise=6)  # its own: may start over
    assert not (home.path / "pki").exists() and (home.path / "exercise").read_text().strip() == "6"
    home.prepare(fresh=True, exercise=None)  # a lab fresh-started here takes the dir over
    (home.path / "pki").mkdir()
    with pytest.raises(StateDirBusy):
        home.prepare(fresh=True, exercise=1)
