"""The WSGI entry point of the listener: picks the app by Host, caps bodies, records every exchange.

Flask's host_matching is not used: it answers 404 when the Host header carries a non-443 port.
"""
from __future__ import annotations

import io
import json
import time
from urllib.parse import quote

from lab.events import Event, EventLog, redact_body, redact_headers, redact_query

MAX_BODY = 1024 * 1024  # enrollment bodies are a few KB; a CMS-signed profile request is under 4 KB
# An oversized body is read and discarded up to this much before the 413, so the client, still sending, can
# read the answer instead of meeting a reset connection (the "lingering close" of web servers).
DRAIN_LIMIT = 64 * 1024 * 1024

# Keys an app may set in the WSGI environ to label the exchange in the timeline.
STAGE_KEY = "mdmlab.stage"
DEVICE_KEY = "mdmlab.device"
SUMMARY_KEY = "mdmlab.summary"
FIELD_KEYS = {name: f"mdmlab.{name}" for name in ("enrollment", "user", "message_type", "outcome")}
DETAIL_KEY = "mdmlab.detail"  # facts an app adds to the event's detail (e.g. the MDM's schema problems)
# Set by the listener: the request's gate to a slot for a streaming answer (lab.server.StreamGate)
STREAM_GATE_KEY = "mdmlab.stream_gate"
# Set by the listener on a request it refuses for its framing: (status line, error, message); answered here so the
# refusal is in the timeline like any exchange
REFUSAL_KEY = "mdmlab.refusal"


def host_of(environ) -> str:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8443
        return host[1:host.find("]")] if "]" in host else host
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")  # a fully qualified name (betterbag.test.) is the same host


def json_response(start_response, status: str, body: dict, extra_headers=()):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            *extra_headers])
    return [data]


def _drain(stream, limit: int) -> None:
    remaining = limit
    try:
        while remaining > 0:
            chunk = stream.read(min(65536, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
    except (OSError, ValueError):
        return


class Dispatcher:
    def __init__(self, events: EventLog, max_body: int = MAX_BODY):
        self.apps: dict[str, tuple[str, object]] = {}
        self.events = events
        self.max_body = max_body

    def mount(self, host: str, component: str, app) -> None:
        self.apps[host.lower()] = (component, app)

    @property
    def hosts(self) -> list[str]:
        return sorted(self.apps)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        host = host_of(environ)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return start_response(status, headers, exc_info)

        body = b""
        component = "lab"
        sni = environ.get("SSL_TLS_SNI") or ""
        refusal = environ.get(REFUSAL_KEY)
        if refusal is not None:
            component = self.apps.get(host, ("lab",))[0]
            status_line, error, message = refusal
            result = json_response(capture, status_line, {"error": error, "message": message},
                                   [("Connection", "close")])
        elif sni and host and sni != host:
            result = json_response(capture, "421 Misdirected Request", {
                "error": "misdirected-request",
                "message": f"TLS server name {sni!r} does not match Host {host!r}; "
                           f"connect with the name you put in the Host header"})
        elif host not in self.apps:
            result = json_response(capture, "404 Not Found", {
                "error": "unknown-host", "host": host,
                "message": f"the lab serves no host named {host!r}", "known_hosts": self.hosts})
        else:
            component, app = self.apps[host]
            body, too_large = self._read_body(environ)
            if too_large:
                result = json_response(capture, "413 Content Too Large", {
                    "error": "body-too-large", "limit": self.max_body,
                    "message": f"request bodies are limited to {self.max_body} bytes"}, [("Connection", "close")])
            else:
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
                result = app(environ, capture)
        chunks = None
        gate = environ.get(STREAM_GATE_KEY)
        if gate is not None and self._streaming(environ, captured) and not gate.reserve():
            closer = getattr(result, "close", None)
            if closer:
                closer()
            result = json_response(capture, "503 Service Unavailable", {
                "error": "too-many-streams", "limit": gate.limit,
                "message": f"the lab holds at most {gate.limit} streams open at once; try again later"},
                [("Retry-After", "5")])
        if self._small(captured.get("headers", [])):
            chunks = list(result)  # a sized body is read once here, so the timeline can show it
            closer = getattr(result, "close", None)
            if closer:
                closer()
            result = chunks
        self._record(environ, host, component, body, captured, chunks, time.perf_counter() - started)
        return result

    @staticmethod
    def _streaming(environ, captured) -> bool:
        """An answer without a length, held open by the listener (an event stream)."""
        status = int(captured.get("status", "500").split()[0])
        return (environ.get("REQUEST_METHOD") != "HEAD" and status >= 200 and status not in (204, 304)
                and not any(k.lower() == "content-length" for k, _ in captured.get("headers", [])))

    @staticmethod
    def _small(headers) -> bool:
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        return length is not None and length.isdigit() and int(length) <= 256 * 1024

    def _read_body(self, environ) -> tuple[bytes, bool]:
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        # Chunked framing wins over a Content-Length sent alongside it (RFC 9112 6.3)
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            data = stream.read(self.max_body + 1)
            if len(data) > self.max_body:
                _drain(stream, DRAIN_LIMIT)
                return b"", True
            return data, False
        if length.isdigit():
            if int(length) > self.max_body:
                if int(length) <= DRAIN_LIMIT:
                    _drain(stream, int(length))
                return b"", True
            return stream.read(int(length)) if int(length) else b"", False
        return b"", False

    def _record(self, environ, host, component, body, captured, chunks, elapsed) -> None:
        status_line = captured.get("status", "500")
        status = int(status_line.split()[0])
        response_headers = captured.get("headers", [])
        req_headers = [(k[5:].replace("_", "-").title(), v) for k, v in environ.items() if k.startswith("HTTP_")]
        if environ.get("CONTENT_TYPE"):
            req_headers.append(("Content-Type", environ["CONTENT_TYPE"]))
        response_type = next((v for k, v in response_headers if k.lower() == "content-type"), None)
        query = environ.get("QUERY_STRING", "")
        path = quote(environ.get("PATH_INFO", ""), safe="/@:-._~!$&'()*+,;=")
        detail = {
            "query": redact_query(query),
            "request_headers": redact_headers(req_headers),
            "request_body": redact_body(body, environ.get("CONTENT_TYPE")),
            "response_headers": redact_headers(response_headers),
            "response_body": redact_body(b"".join(chunks), response_type) if chunks is not None else "<stream>",
            "elapsed_ms": round(elapsed * 1000, 2),
            "client": environ.get("REMOTE_ADDR"),
            **environ.get(DETAIL_KEY, {}),
        }
        self.events.record(Event(
            component=component, kind="http", host=host, method=environ.get("REQUEST_METHOD"), path=path,
            status=status, stage=environ.get(STAGE_KEY), device=environ.get(DEVICE_KEY),
            summary=environ.get(SUMMARY_KEY) or status_line, detail=detail,
            **{name: environ.get(key) for name, key in FIELD_KEYS.items()}))
