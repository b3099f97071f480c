"""The device's own HTTP/1.1 client for its system traffic (discovery, enrollment, token, check-in, commands).

It does what the phone's networking stack does and nothing more: names through the lab DNS, trust in the lab
CA only (one shared verifying context), keep-alive connections per host, redirects left to the caller (the
device follows them itself, step by step, to trace each hop), and cookies only when given a jar (the sign-in
browser's, ``cookies.CookieJar``; the MDM client sends none). Failures are raised as they happen
(``DNSFailure``, the ssl and socket errors, ``http.client`` errors) for ``errors.transport_failure`` to explain.

requests costs about 0.4 ms of CPU per exchange over this (session and cookie merging, urllib3's pool);
a fleet of simulated devices spends most of its CPU there otherwise.
"""
from __future__ import annotations

import http.client
import json as jsonlib
import select
import socket
import threading
from urllib.parse import urlencode, urlsplit

from requests.structures import CaseInsensitiveDict

from lab.device.cookies import CookieJar
from lab.net import LabResolver, trust_context

REDIRECTS = (301, 302, 303, 307, 308)


class HTTPStatusError(Exception):
    """``raise_for_status`` on a 4xx/5xx answer."""

    def __init__(self, response: Response):
        super().__init__(f"{response.status_code} {response.reason} for {response.url}")
        self.response = response


class Response:
    __slots__ = ("status_code", "reason", "headers", "content", "url")

    def __init__(self, status_code: int, reason: str, headers: CaseInsensitiveDict, content: bytes, url: str):
        self.status_code, self.reason, self.headers, self.content, self.url = (status_code, reason, headers,
                                                                                content, url)

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def is_redirect(self) -> bool:
        return self.status_code in REDIRECTS and "Location" in self.headers

    @property
    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("Content-Type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self):
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPStatusError(self)

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class _Connection(http.client.HTTPSConnection):
    """Dials the address the lab DNS gives for the host (on the mapped port), keeps the name for SNI and the
    certificate check, and the URL's port for the Host header."""

    def __init__(self, host: str, port: int, dial_port: int, resolver: LabResolver, context, timeout):
        super().__init__(host, port, timeout=timeout, context=context)
        self._dial_port, self._resolver, self._tls = dial_port, resolver, context

    def connect(self) -> None:
        address = self._resolver.resolve(self.host)
        sock = socket.create_connection((address, self._dial_port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def dropped(self) -> bool:
        """The server closed this idle connection (or sent something unasked): not reusable."""
        return self.sock is None or bool(select.select([self.sock], [], [], 0)[0])


class DeviceHTTP:
    """A keep-alive HTTPS client with the ``request``/``get``/``post``/``put`` shape of a requests session.

    ``port_map`` maps a URL's port to the one to dial (443 → the lab's), for URLs the device builds itself.
    """

    def __init__(self, resolver: LabResolver, ca_cert: str, port_map: dict[int, int] | None = None,
                 idle_per_host: int = 4, cookies: CookieJar | None = None):
        self.resolver = resolver
        self.cookies = cookies
        self.ca_cert = ca_cert
        self.port_map = dict(port_map or {})
        self.idle_per_host = idle_per_host
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, headers: dict | None = None, data=None, params: dict | None = None,
                timeout: float | None = None, allow_redirects: bool = False) -> Response:
        if allow_redirects:
            raise ValueError("the device follows redirects itself, one traced step at a time")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"the device only speaks https to a named host, not {url!r}")
        host, port = parts.hostname.lower().rstrip("."), parts.port or 443
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if parts.query else "?") + urlencode(params)
        headers = dict(headers or {})
        if isinstance(data, dict):
            data = urlencode(data).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif isinstance(data, str):
            data = data.encode()
        if self.cookies is not None and not any(k.lower() == "cookie" for k in headers):
            sent = self.cookies.header(host, parts.path or "/")
            if sent:
                headers["Cookie"] = sent
        conn = self._checkout(host, port, timeout)
        try:
            conn.request(method, target, body=data, headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except BaseException:
            conn.close()
            raise
        response = Response(answer.status, answer.reason, CaseInsensitiveDict(_joined(answer.getheaders())),
                            content, url)
        if self.cookies is not None:
            self.cookies.receive(host, parts.path or "/", answer.msg.get_all("Set-Cookie") or [])
        if answer.will_close:
            conn.close()
        else:
            self._checkin(host, port, conn)
        return response

    def get(self, url: str, **kwargs) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, data=None, **kwargs) -> Response:
        return self.request("POST", url, data=data, **kwargs)

    def put(self, url: str, data=None, **kwargs) -> Response:
        return self.request("PUT", url, data=data, **kwargs)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _checkout(self, host: str, port: int, timeout: float | None) -> _Connection:
        with self._lock:
            conns = self._idle.get((host, port), [])
            while conns:
                conn = conns.pop()
                if not conn.dropped():
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn
                conn.close()
        return _Connection(host, port, self.port_map.get(port, port), self.resolver, trust_context(self.ca_cert),
                           timeout)

    def _checkin(self, host: str, port: int, conn: _Connection) -> None:
        with self._lock:
            conns = self._idle.setdefault((host, port), [])
            if len(conns) < self.idle_per_host:
                conns.append(conn)
                return
        conn.close()

    def __enter__(self) -> DeviceHTTP:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Repeated header fields as one, comma-joined (RFC 9110 5.3), as requests presents them."""
    headers: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for name, value in pairs:
        key = lowered.setdefault(name.lower(), name)
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers
