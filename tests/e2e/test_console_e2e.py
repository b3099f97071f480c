"""The console through the real listener: the live event stream over TLS (flushed per event, kept alive,
bounded, resumable), `mdmlab events [--follow] [--json]` and `mdmlab ca export [--mobileconfig]`, with openssl
and plistutil judging what was exported."""
from __future__ import annotations

import json
import plistlib
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lab.cli.events import sse_events
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run

MDMLAB = [sys.executable, "-m", "lab"]
WAIT = 10  # seconds: every wait here is bounded


@pytest.fixture(scope="module")
def session(lab):
    s = requests.Session()
    s.trust_env = False
    s.verify = str(lab.pki.cert_path)
    # As browsers do, retry an idempotent request once when a kept-alive connection turns out closed: the server
    # may close an idle one (its 30 s idle deadline) just as the next request goes out (RFC 9112 9.3.1).
    s.mount("https://", HTTPAdapter(max_retries=Retry(total=1, connect=0, read=1, status=0)))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def quick_heartbeat(lab):
    """Keep-alives every half second: a test closing its stream from another thread is not kept waiting."""
    app = lab.dispatcher.apps["localhost"][1]
    app.config["SSE_HEARTBEAT"] = 0.5
    yield
    app.config.pop("SSE_HEARTBEAT", None)


def base(lab) -> str:
    return f"https://localhost:{lab.https_port}"


def console_app(lab):
    return lab.dispatcher.apps["localhost"][1]


class StreamReader:
    """Reads an event stream in a thread, so the test can wait for each item with a bound."""

    def __init__(self, response):
        self.response = response
        self.lines: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                self.lines.put(line)
        except (requests.RequestException, AttributeError, ValueError, OSError):
            pass  # the test closed the response under this thread
        finally:
            self.ended.set()

    def wait_for(self, predicate, timeout=WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if predicate(line):
                return line
        pytest.fail(f"nothing matching arrived on the stream within {timeout} s")


def open_stream(session, lab, query="", headers=None):
    response = session.get(base(lab) + "/api/events/stream" + query, stream=True, timeout=(5, 30),
                           headers=headers or {})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered by the dispatcher
    return StreamReader(response)


def test_each_event_reaches_an_open_stream_at_once(session, lab):
    reader = open_stream(session, lab)
    reader.wait_for(lambda line: line.startswith("retry:"))
    for n in range(3):  # one at a time: each must arrive while the stream stays open
        started = time.monotonic()
        armed = session.post(base(lab) + "/api/faults", json={"name": "well-known-404", "times": n + 1})
        assert armed.status_code == 201
        line = reader.wait_for(lambda text: text.startswith("data:") and "fault well-known-404 set" in text)
        assert time.monotonic() - started < 2
        assert json.loads(line[5:])["component"] == "faults"
    assert not reader.ended.is_set()
    session.delete(base(lab) + "/api/faults")
    reader.response.close()


def test_a_quiet_stream_gets_keep_alives_and_ends_when_its_time_is_up(session, lab):
    app = console_app(lab)
    app.config.update(SSE_HEARTBEAT=0.2, SSE_LIFETIME=1.5)
    try:
        started = time.monotonic()
        reader = open_stream(session, lab, "?component=none-such")
        reader.wait_for(lambda line: line == ": keep-alive", timeout=3)
        reader.wait_for(lambda line: "reconnect with Last-Event-ID" in line, timeout=5)
        assert reader.ended.wait(3)
        assert 1.4 < time.monotonic() - started < 6
    finally:
        app.config.pop("SSE_LIFETIME")


def test_a_client_resumes_with_last_event_id(session, lab):
    top = lab.events.last_id()
    reader = open_stream(session, lab, "?after=0", headers={"Last-Event-ID": str(top - 2)})
    first = reader.wait_for(lambda line: line.startswith("id:"))
    assert first == f"id: {top - 1}"
    reader.response.close()


def test_a_live_enrollment_streams_its_exchanges(session, lab, device):
    reader = open_stream(session, lab, f"?device={IDENTIFIER}")
    thread = threading.Thread(target=lambda: device().enroll(IDENTIFIER, PASSWORD))
    thread.start()
    stages = []
    while "enrollment" not in stages:
        line = reader.wait_for(lambda text: text.startswith("data:"))
        stages.append(json.loads(line[5:])["stage"])
    thread.join(WAIT)
    assert stages[0] == "discovery" and "authentication" in stages
    reader.response.close()


def test_streams_hold_no_worker_after_the_client_leaves(session, lab):
    """Many short-lived streams in a row: each ends its worker, so the API still answers afterwards."""
    console_app(lab).config.update(SSE_HEARTBEAT=0.1)
    for _ in range(60):  # more than the listener's 48 workers
        response = session.get(base(lab) + "/api/events/stream", stream=True, timeout=(5, 5))
        next(response.iter_lines())
        response.close()
    time.sleep(0.5)  # the heartbeat finds the closed connections
    assert session.get(base(lab) + "/api/health", timeout=5).status_code == 200


def stream_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "https-stream")


def test_a_stream_ends_soon_after_its_client_leaves_not_at_its_next_heartbeat(session, lab):
    app = console_app(lab)
    app.config.update(SSE_HEARTBEAT=120)
    try:
        before = stream_threads()
        readers = [open_stream(session, lab, "?component=none-such") for _ in range(5)]
        for reader in readers:
            reader.wait_for(lambda line: line.startswith(": mdmlab events after"))
        assert stream_threads() == before + 5
        for reader in readers:
            reader.response.close()
        deadline = time.monotonic() + 30  # a bound, not a speed target: today's streams wait for the heartbeat
        while stream_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream_threads() == before
        assert lab.https.streams == 0
    finally:
        app.config.pop("SSE_HEARTBEAT")


def test_sse_parser_reads_what_the_console_writes():
    lines = ["retry: 2000", ": comment", "", "id: 7", 'data: {"id": 7}', "", "id: 8", "data: a", "data: b", ""]
    assert list(sse_events(lines)) == [("7", '{"id": 7}'), ("8", "a\nb")]


# -- the CLI -------------------------------------------------------------------------------------------------------
def mdmlab(lab, *args, timeout=60):
    return subprocess.run([*MDMLAB, *args, "--state-dir", str(lab.state_dir)], capture_output=True, text=True,
                          timeout=timeout)


def test_events_json_prints_the_newest(lab):
    result = mdmlab(lab, "events", "--json", "--last", "4")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert len(events) == 4 and [e["id"] for e in events] == sorted(e["id"] for e in events)


def test_events_text_is_one_line_per_event(lab, device):
    device().enroll(IDENTIFIER, PASSWORD)
    result = mdmlab(lab, "events", "--component", "org-domain", "--last", "1")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "org-domain" in line and "discovery" in line
    assert "GET betterbag.test/.well-known/com.apple.remotemanagement → 200" in line


def test_events_after_prints_everything_after(lab):
    top = lab.events.last_id()
    result = mdmlab(lab, "events", "--json", "--after", str(top - 2))
    assert [e["id"] for e in json.loads(result.stdout)][:2] == [top - 1, top]


def test_events_follow_prints_json_lines_as_they_happen(lab, session):
    proc = subprocess.Popen([*MDMLAB, "events", "--follow", "--json", "--last", "0", "--component", "faults",
                             "--state-dir", str(lab.state_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + WAIT
        got = None
        while got is None and time.monotonic() < deadline:  # until the stream is up, arming is repeated
            session.post(base(lab) + "/api/faults", json={"name": "well-known-500"})
            try:
                got = json.loads(lines.get(timeout=0.5))
            except queue.Empty:
                continue
        assert got is not None, "mdmlab events --follow printed nothing"
        assert got["component"] == "faults" and "well-known-500" in got["summary"]
        session.delete(base(lab) + "/api/faults")
        deadline = time.monotonic() + WAIT
        while True:  # more "set" lines may come first: arming was repeated until the stream was up
            event = json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            assert event["component"] == "faults"
            if event["summary"].startswith("cleared"):
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err


def test_events_without_a_lab_is_a_one_line_error(tmp_path):
    result = subprocess.run([*MDMLAB, "events", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1


def test_ca_export_pem_verifies_the_lab_leaves(lab, tmp_path):
    openssl = require_tool("openssl")
    out = tmp_path / "ca.pem"
    result = mdmlab(lab, "ca", "export", "-o", str(out))
    assert result.returncode == 0 and f"wrote {out}" in result.stderr
    assert out.read_bytes() == lab.pki.cert_path.read_bytes()
    leaf = lab.state_dir / "pki" / "hosts" / "mdm.lab.test.pem"
    verified = run([openssl, "verify", "-CAfile", str(out), "-verify_hostname", "mdm.lab.test", str(leaf)])
    assert verified.returncode == 0, verified.stderr
    to_stdout = mdmlab(lab, "ca", "export")
    assert to_stdout.stdout.encode() == out.read_bytes()


def test_ca_export_mobileconfig_is_a_profile_with_the_ca(lab, tmp_path):
    openssl, plistutil = require_tool("openssl"), require_tool("plistutil")
    out = tmp_path / "mdmlab.mobileconfig"
    result = mdmlab(lab, "ca", "export", "--mobileconfig", "-o", str(out))
    assert result.returncode == 0 and "Certificate Trust Settings" in result.stderr
    # plistutil exits 0 even on errors: judge by what it wrote
    binary = tmp_path / "profile.bin"
    run([plistutil, "-i", str(out), "-o", str(binary)])
    profile = plistlib.loads(binary.read_bytes())
    [payload] = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    der = tmp_path / "ca.der"
    der.write_bytes(payload["PayloadContent"])
    text = run([openssl, "x509", "-inform", "DER", "-in", str(der), "-noout", "-text"])
    assert text.returncode == 0 and b"Name Constraints: critical" in text.stdout
    assert b"Permitted:" in text.stdout and b"DNS:betterbag.test" in text.stdout


def test_ca_downloads_over_tls_with_curl(lab, tmp_path):
    curl = require_tool("curl")
    result = run([curl, "-sS", "-D", "-", "-o", str(tmp_path / "p"), "--cacert", str(lab.pki.cert_path),
                  f"https://localhost:{lab.https_port}/ca.mobileconfig"])
    assert result.returncode == 0, result.stderr
    assert b"content-type: application/x-apple-aspen-config" in result.stdout.lower()
    assert plistlib.loads((tmp_path / "p").read_bytes())["PayloadType"] == "Configuration"
