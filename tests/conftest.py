"""Shared fixtures: a whole lab on ephemeral ports (one per test module), and a device pointed at it."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.device import Device
from lab.launcher import Lab
from lab.net import LabResolver, Network, lab_session
from lab.scenario import load

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "carry-on-2026"
IDENTIFIER = "eliza@betterbag.test"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default scenario's lab, started for this module on ephemeral ports, stopped after it."""
    with Lab(load("betterbag"), tmp_path_factory.mktemp("lab"), https_port=0, dns_port=0) as running:
        yield running


@pytest.fixture
def network(lab) -> Network:
    return lab.network()


@pytest.fixture
def session(lab):
    """An HTTPS client of this module's lab, as a tool outside it: the lab's DNS, only the lab CA trusted."""
    with lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path)) as client:
        yield client


@pytest.fixture
def device(network):
    made = []

    def make(**kwargs) -> Device:
        d = Device(network, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def require_tool(name: str) -> str:
    """Interop tools are installed by scripts/install-test-tools; a missing one is a failure, never a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/install-test-tools (tox does this)")
    return path


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=kwargs.pop("timeout", 30), **kwargs)


def lab_json(lab) -> dict:
    return json.loads((lab.state_dir / "lab.json").read_text())


_MARKS = {"e2e": pytest.mark.e2e, "browser": pytest.mark.browser}


def pytest_collection_modifyitems(items) -> None:
    """Marks every test by its folder, so ``-m "not browser"`` or ``-m e2e`` selects them."""
    for item in items:
        folder = item.path.relative_to(ROOT / "tests").parts[0]
        if folder in _MARKS:
            item.add_marker(_MARKS[folder])
