"""The architecture's boundaries (ARCHITECTURE.md, issue 10): read every module's imports, including those inside
functions, and fail when one part reaches into another it must not know."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PLUMBING = {"pki", "dns", "dns_server", "server", "dispatch", "store", "events", "faults", "cms", "oauth1",
            "protocol", "flaskapp", "config", "net", "plists", "schema", "admin_gate", "statedir", "throttle",
            "federation", "changes"}
LAUNCHER = {"launcher", "scenario", "runner", "exercises", "setups"}
TOOLS = {"fleet", "probe", "doctor"}
CLI = {"cli", "__main__", "control"}


def part_of(module: str) -> str:
    """The architectural part a dotted module name belongs to."""
    parts = module.split(".")
    if parts[0] == "mocks":
        if len(parts) == 1:
            return "mocks"
        return "mock-shared" if parts[1] == "well_known" else f"mock:{parts[1]}"
    if parts[0] != "lab":
        return "outside"
    if len(parts) == 1:
        return "lab"
    head = parts[1]
    if head == "device":
        return "device"
    if head == "console":
        return "console"
    for name, group in (("plumbing", PLUMBING), ("launcher", LAUNCHER), ("tools", TOOLS), ("cli", CLI)):
        if head in group:
            return name
    return f"unclassified:{head}"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports, absolute, with the line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # ``from lab import device`` imports the device: count the names too.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def forbidden(source: str, target: str) -> str | None:
    """Why ``source`` (a part) must not import ``target`` (a part), or None."""
    mock_target = target.startswith("mock:") or target == "mocks"
    if source == "device" and (mock_target or target in ("launcher", "console", "cli", "tools", "mock-shared")):
        return "the device is a black box: it knows no mock, launcher, console, CLI or tool"
    if source.startswith("mock:") and (target == "device" or (mock_target and target not in (source, "mocks"))):
        return "a mock shares nothing but the network: it imports no other mock and no device"
    if source == "mock-shared" and (mock_target or target == "device"):
        return "the mocks' shared query rule imports no mock and no device"
    if source == "plumbing" and (mock_target or target in ("device", "console", "launcher", "cli", "tools",
                                                             "mock-shared")):
        return "plumbing knows no mock, device, console, launcher, CLI or tool"
    if source == "launcher" and target in ("device", "cli", "tools"):
        return "the launcher builds servers, not clients, and the CLI is above it"
    if source == "cli" and (mock_target or target == "mock-shared"):
        return "the CLI reaches mocks through the control API or the launcher's catalogue"
    if source == "console" and (mock_target or target in ("cli", "tools", "mock-shared")):
        return "the console reads the mocks' states through the lab it is handed"
    if source == "tools" and target in ("launcher", "cli", "console") or (source == "tools" and mock_target):
        return "a tool reaches a lab through lab.json and the control API"
    return None


SOURCES = sorted(p for top in ("lab", "mocks") for p in (ROOT / top).rglob("*.py"))


def test_every_module_belongs_to_a_part():
    unclassified = sorted({part_of(module_name(p)) for p in SOURCES} - {"lab", "outside"}
                          - {"device", "console", "plumbing", "launcher", "tools", "cli", "mocks", "mock-shared"}
                          - {f"mock:{p.name}" for p in (ROOT / "mocks").iterdir() if p.is_dir()})
    assert not unclassified, f"name the part of these modules in tests/test_boundaries.py: {unclassified}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_respect_the_boundaries(path):
    source = part_of(module_name(path))
    crossings = []
    for target_module, line in imports_of(path):
        target = part_of(target_module)
        why = forbidden(source, target)
        if why:
            crossings.append(f"{path.relative_to(ROOT)}:{line} imports {target_module}: {why}")
    assert not crossings, "\n".join(crossings)


def test_the_rules_catch_each_kind_of_crossing():
    assert forbidden("device", "mock:mdm") and forbidden("device", "launcher") and forbidden("device", "console")
    assert forbidden("mock:mdm", "mock:abm") and forbidden("mock:abm", "device")
    assert not forbidden("mock:mdm", "mock:mdm") and not forbidden("mock:mdm", "mock-shared")
    assert forbidden("plumbing", "mock:mdm") and forbidden("plumbing", "device") and forbidden("plumbing", "cli")
    assert forbidden("launcher", "device") and forbidden("launcher", "cli")
    assert forbidden("cli", "mock:org_domain") and forbidden("console", "mock:abm")
    assert forbidden("tools", "launcher")
    assert part_of("lab.device.http") == "device" and part_of("lab.net") == "plumbing"
    assert part_of("lab.cli.fault") == "cli" and part_of("mocks.mdm.state") == "mock:mdm"
