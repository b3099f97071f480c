"""The floor this machine allows: new TLS handshakes per CPU-second, openssl s_server against openssl s_time.

The server holds a leaf like the lab's (ECDSA P-256, issued by a CA built the same way) and s_time makes a new
connection and full handshake each time (-new, TLS 1.3 as the devices negotiate it). Both run on this machine, as
the lab and its fleet do. The other benchmarks report their figures as ratios to these.
"""
from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import cpu_seconds  # noqa: E402
from lab.pki import CertificateAuthority  # noqa: E402

SECONDS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(seconds: float = SECONDS) -> dict:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("openssl is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority(Path(tmp) / "pki", ["lab.test"])
        leaf = ca.issue_server("mdm.lab.test")
        port = _free_port()
        server = subprocess.Popen([openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(leaf.cert_path),
                                   "-key", str(leaf.key_path), "-quiet", "-www"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError as failed:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("openssl s_server did not start") from failed
                    time.sleep(0.02)
            server_before = cpu_seconds(server.pid)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            result = subprocess.run([openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
                                     str(int(seconds))], capture_output=True, text=True, timeout=seconds + 60)
            wall = time.perf_counter() - started
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu = cpu_seconds(server.pid) - server_before
        finally:
            server.terminate()
            server.wait(timeout=10)
    match = re.search(r"(\d+) connections in [\d.]+s", result.stdout)
    if not match:
        raise SystemExit(f"unexpected s_time output: {result.stdout}{result.stderr}")
    handshakes = int(match.group(1))
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime
                                                                        + children_before.ru_stime)
    total_cpu = server_cpu + client_cpu
    return {"handshakes": handshakes, "wall_s": round(wall, 2),
            "server_cpu_ms_per_handshake": round(server_cpu * 1000 / handshakes, 3),
            "client_cpu_ms_per_handshake": round(client_cpu * 1000 / handshakes, 3),
            "cpu_ms_per_handshake": round(total_cpu * 1000 / handshakes, 3),
            "handshakes_per_cpu_s": round(handshakes / total_cpu, 1),
            "handshakes_per_s": round(handshakes / wall, 1)}


def main() -> None:
    import json
    floor = measure()
    print(f"openssl s_server + s_time -new: {floor['handshakes']} handshakes in {floor['wall_s']} s; "
          f"{floor['handshakes_per_cpu_s']} handshakes per CPU-second; server {floor['server_cpu_ms_per_handshake']} "
          f"ms CPU, client {floor['client_cpu_ms_per_handshake']} ms CPU per handshake")
    print(json.dumps(floor))


if __name__ == "__main__":
    main()
