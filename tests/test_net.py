"""lab.net: the one recipe from lab.json to a client's Network, and the client plumbing's place in the layers."""
from __future__ import annotations

import ast
from pathlib import Path

from lab import config
from lab.net import DEFAULT_APPLE_HOST, LabResolver, Network, lab_session
from tests.conftest import lab_json

ROOT = Path(__file__).resolve().parent.parent
INFO = {"dns_address": "127.0.0.5", "dns_port": 10053, "https_port": 8443, "ca_cert": "/s/pki/ca.pem",
        "hosts": ["mdm.lab.test"], "abm": {"fallback": "axm-adm-enroll.school.test"}}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_from_lab_info_reads_address_ports_ca_and_apple_host():
    assert Network.from_lab_info(INFO) == Network("127.0.0.5", 10053, "/s/pki/ca.pem", 8443,
                                                  "axm-adm-enroll.school.test")


def test_from_lab_info_defaults_and_overrides():
    bare = {"dns_port": "53", "https_port": "443", "ca_cert": "/ca.pem", "hosts": [], "abm": None}
    assert Network.from_lab_info(bare) == Network("127.0.0.1", 53, "/ca.pem", 443, DEFAULT_APPLE_HOST)
    moved = Network.from_lab_info(INFO, dns_address="192.0.2.2", ca_cert="/other.pem")
    assert (moved.dns_server, moved.ca_cert) == ("192.0.2.2", "/other.pem")


def test_lab_network_is_the_recipe_of_its_lab_json(lab):
    assert lab.network() == Network.from_lab_info(lab_json(lab))
    assert lab.network() == Network(lab.listen, lab.dns.port, str(lab.pki.cert_path), lab.https_port,
                                    lab.scenario.abm_hosts["fallback"])


def test_a_session_from_lab_network_reaches_the_lab_through_its_dns_and_ca(lab):
    network = lab.network()
    session = lab_session(LabResolver(network.dns_server, network.dns_port), network.ca_cert)
    try:
        response = session.get(f"https://{lab.scenario.console_host}:{network.https_port}/api/health", timeout=10)
    finally:
        session.close()
    assert response.status_code == 200


def test_admin_token_file_is_config_and_the_launcher_takes_it_from_there():
    assert config.ADMIN_TOKEN_FILE == "admin-token"
    assert "lab.control" not in imports(ROOT / "lab" / "launcher.py")


def test_client_plumbing_is_plumbing():
    assert not (ROOT / "lab" / "device" / "transport.py").exists()
    assert not {m for m in imports(ROOT / "lab" / "net.py") if m.startswith(("lab.device", "mocks", "lab.cli"))}
    for name in ("launcher.py", "scenario.py", "exercises.py"):
        assert not {m for m in imports(ROOT / "lab" / name) if m.startswith("lab.device")}, name


def test_one_lab_resolver_name():
    from lab import dns, net
    assert hasattr(net, "LabResolver") and not hasattr(dns, "LabResolver")


def test_the_apple_host_default_is_written_once():
    hits = [p for p in (ROOT / "lab").rglob("*.py") if '"axm-adm-enroll.lab.test"' in p.read_text()]
    assert hits == [ROOT / "lab" / "net.py"]
