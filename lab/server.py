"""One HTTPS listener for every lab host: a TLS context per host chosen by SNI, an event loop for waiting.

One selector thread holds every connection while it only waits: for the TLS handshake's next message (whose crypto then
runs on a worker), the request head and body (parsed by h11 as bytes arrive), a kept-alive client's silence. Each wait
has a deadline (HANDSHAKE_TIMEOUT, HEAD_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT), so a silent or trickling client costs a
socket and a few kB, never a thread. A worker thread runs the WSGI app only on a complete request, writes the answer,
and serves the client's next request if it arrives within LINGER; otherwise it hands the connection back. A streaming
answer (no Content-Length: the console's event stream) moves to a thread of its own, at most MAX_STREAMS of them; past
that the answer is 503; a client that leaves is noticed by the selector at once (its slot is freed, the socket shut).

The previous listener (cheroot's thread pool) spent a worker on every connection it read from, and 48 silent or
slow clients took the lab down (issue 13; benchmarks/hostile.py measures both).
"""
from __future__ import annotations

import collections
import io
import json
import logging
import queue
import resource
import select
import selectors
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote_to_bytes

import h11

from lab.dispatch import DRAIN_LIMIT, MAX_BODY, REFUSAL_KEY, STREAM_GATE_KEY

log = logging.getLogger("mdmlab.server")
HANDSHAKE_TIMEOUT = 5.0  # from accept to the end of the TLS handshake
HEAD_TIMEOUT = 10.0  # from a request's first byte to the end of its head
BODY_TIMEOUT = 30.0  # from the end of the head to the end of the body
IDLE_TIMEOUT = 30.0  # a connection with no request under way
WRITE_TIMEOUT = 30.0  # one send of an answer to a client that does not read
DRAIN_TIMEOUT = 2.0  # reading what a refused client still sends, so it can read the refusal (lingering close)
MAX_HEADER_BYTES = 64 * 1024
WORKER_THREADS = 48
MAX_CONNECTIONS = 2000  # past it, the connection waiting longest for its client makes room
MAX_STREAMS = 100  # streaming answers held open at once (event streams)
LINGER = 0.005  # seconds a worker waits for a kept-alive client's next request
DEPARTED_KEY = "mdmlab.departed"  # environ: a threading.Event set when the client of a streaming answer leaves
READ_BUDGET = 256 * 1024  # bytes read from one connection per turn of the loop

_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HostContexts:
    """The TLS context of each host, replaceable at run time (TLS faults swap a host's certificate)."""

    def __init__(self, default: ssl.SSLContext, override=None):
        self._lock = threading.Lock()
        self._by_host: dict[str, ssl.SSLContext] = {}
        self.default = default
        self.default.sni_callback = self._select
        self.override = override  # host → a context that replaces the host's own for this handshake (TLS faults)

    def set(self, host: str, ctx: ssl.SSLContext) -> None:
        with self._lock:
            self._by_host[host.lower()] = ctx

    def get(self, host: str) -> ssl.SSLContext | None:
        with self._lock:
            return self._by_host.get(host.lower())

    def _select(self, sslsock, server_name, _initial_ctx):
        sslsock.mdmlab_sni = server_name.lower() if server_name else None
        if server_name:
            ctx = self.get(server_name)
            if ctx is not None and self.override is not None:
                ctx = self.override(server_name.lower()) or ctx
            if ctx is not None:
                sslsock.context = ctx
        return None


class StreamGate:
    """A request's way to one of the listener's stream slots: ``reserve()`` is true when the request may hold a
    streaming answer open (it keeps the slot until the answer ends or the client leaves). The dispatcher asks
    before it records the exchange, so a refusal is in the timeline as the 503 the client gets."""

    def __init__(self, server: HTTPSServer):
        self._server = server
        self.reserved = False
        self.departed = threading.Event()

    @property
    def limit(self) -> int:
        return MAX_STREAMS

    def reserve(self) -> bool:
        with self._server._streams_lock:
            if not self.reserved and self._server._streams < MAX_STREAMS:
                self._server._streams += 1
                self.reserved = True
            return self.reserved

    def release(self) -> None:
        with self._server._streams_lock:
            if self.reserved:
                self.reserved = False
                self._server._streams -= 1


class _Conn:
    __slots__ = ("sock", "addr", "http", "state", "deadline", "request", "body", "too_large", "environ",
                 "drained", "gate", "registered", "refusal", "queued_at")

    def __init__(self, sock: ssl.SSLSocket, addr):
        self.sock = sock
        self.addr = addr
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.state = "handshake"  # handshake · idle · head · body · busy (a worker has it) · stream · drain
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.too_large = False
        self.environ: dict = {}
        self.drained = 0
        self.gate: StreamGate | None = None
        self.registered = False
        self.refusal: _Refuse | None = None
        self.queued_at = 0.0


class _Refuse(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


_READY, _WAIT, _CLOSED = "ready", "wait", "closed"


class HTTPSServer:
    """The listener, bound at construction, so the port is known before the apps are built."""

    def __init__(self, contexts: HostContexts, address: str = "127.0.0.1", port: int = 0,
                 max_body: int | None = None):
        self.contexts = contexts
        self.max_body = max_body or MAX_BODY  # the dispatcher answers 413 (with its reason) above this
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((address, port))
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address = address
        self.port = self.socket.getsockname()[1]
        self.app = self._not_ready
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: collections.deque[_Conn] = collections.deque()
        self._conns: set[_Conn] = set()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._streams = 0
        self._streams_lock = threading.Lock()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._accept_paused_until = 0.0
        self._thread: threading.Thread | None = None

    # -- the app ----------------------------------------------------------------------------------------------

    @staticmethod
    def _not_ready(environ, start_response):
        start_response("503 Service Unavailable", [("Content-Type", "application/json"), ("Retry-After", "1")])
        return [b'{"error": "starting", "message": "the lab is starting"}']

    def set_app(self, app) -> None:
        self.app = app

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        _raise_file_limit(MAX_CONNECTIONS + 512)
        self._running = True
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="https", daemon=True)
        self._thread.start()
        for i in range(WORKER_THREADS):
            worker = threading.Thread(target=self._worker, name=f"https-worker-{i}", daemon=True)
            worker.start()
            self._threads.append(worker)

    def stop(self) -> None:
        if not self._running:
            self.socket.close()
            return
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for _ in self._threads:
            self._work.put(None)
        for worker in self._threads:
            worker.join(timeout=2)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    # -- the selector thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = 0.0
        try:
            while self._running:
                for key, _mask in self._selector.select(timeout=0.25):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    else:
                        self._on_readable(key.data)
                while self._returned:
                    self._take_back(self._returned.popleft())
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.25
        finally:
            for conn in list(self._conns):
                if conn_waiting(conn):
                    self._close(conn)
            self._selector.close()
            self.socket.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors: stop accepting for a moment
                log.warning("accept failed: %s", exc)
                self._selector.unregister(self.socket)
                self._accept_paused_until = time.monotonic() + 0.1
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                self._evict_one()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            try:
                tls = self.contexts.default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                continue
            conn = _Conn(tls, addr)
            self._conns.add(conn)
            self._register(conn)

    def _evict_one(self) -> None:
        waiting = [c for c in self._conns if conn_waiting(c)]
        if waiting:
            self._close(min(waiting, key=lambda c: c.deadline))

    def _register(self, conn: _Conn) -> None:
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.registered = True

    def _unregister(self, conn: _Conn) -> None:
        if conn.registered:
            conn.registered = False
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        for conn in [c for c in self._conns if c.deadline <= now and conn_waiting(c)]:
            if conn.state == "head":
                self._refuse(conn, _Refuse(408, "request-timeout", "the request head did not arrive in time"))
            elif conn.state == "body":
                self._refuse(conn, _Refuse(408, "request-timeout", "the request body did not arrive in time"))
            else:
                self._close(conn)

    def _on_readable(self, conn: _Conn) -> None:
        if conn.state == "stream":  # the client of a streaming answer sent something or left: it is done
            assert conn.gate is not None  # a streaming answer has its gate
            self._unregister(conn)
            conn.gate.departed.set()
            conn.gate.release()
            try:
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)  # the stream's next write fails at once
            except OSError:
                pass
            return
        if conn.state == "handshake":  # the handshake's crypto runs on a worker, never holding up this loop
            self._unregister(conn)
            conn.state, conn.queued_at = "handshaking", time.monotonic()
            self._work.put(conn)
            return
        if conn.state == "drain":
            self._drain(conn)
            return
        outcome = self._read(conn)
        if outcome == _READY:
            self._unregister(conn)
            conn.state = "busy"
            self._work.put(conn)

    def _take_back(self, conn: _Conn) -> None:
        """A worker or stream thread hands ``conn`` back: to close, to watch (a stream), or to wait for its client."""
        if conn.state in ("closing", "stream-done") or not self._running:
            self._close(conn)
            return
        if conn.state == "handshake":  # the client's next handshake message is not here yet
            # the deadline counts the client's time only, not the lab's while a flood of handshakes is queued
            conn.deadline += time.monotonic() - conn.queued_at
            self._register(conn)
            return
        if conn.state == "stream":
            assert conn.gate is not None  # a streaming answer has its gate
            if not conn.gate.departed.is_set() and not conn.registered:
                self._register(conn)
            return
        if conn.state == "drain":
            conn.deadline = time.monotonic() + DRAIN_TIMEOUT
        self._register(conn)  # idle, head or body: the worker set the state's deadline

    def _hand_back(self, conn: _Conn, state: str | None = None) -> None:
        """From a worker or a stream thread: give ``conn`` back to the selector thread (only that thread registers,
        unregisters and closes sockets, so a closed descriptor's number is never reused under the selector)."""
        if state is not None:
            conn.state = state
        try:
            conn.sock.setblocking(False)
        except (OSError, ValueError):
            pass
        self._returned.append(conn)
        self._wake()

    def _drain(self, conn: _Conn) -> None:
        try:
            while conn.drained < DRAIN_LIMIT:
                data = conn.sock.recv(65536)
                if not data:
                    break
                conn.drained += len(data)
            else:
                self._close(conn)
                return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ValueError):
            pass
        self._close(conn)

    # -- reading and parsing (the selector thread, or a worker that owns the connection) ------------------------

    def _read(self, conn: _Conn) -> str:
        """Read what the client sent, without waiting, and parse it: _READY when a whole request is here."""
        received = 0
        eof = False
        while received < READ_BUDGET:
            try:
                data = conn.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except (ssl.SSLError, OSError, ValueError):
                eof = True
                break
            if not data:
                eof = True
                break
            received += len(data)
            conn.http.receive_data(data)
        if eof:
            conn.http.receive_data(b"")
        return self._advance(conn)

    def _advance(self, conn: _Conn) -> str:
        while True:
            try:
                event = conn.http.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
                reason = "header-too-large" if status == 431 else "bad-request"
                self._refuse(conn, _Refuse(status, reason, f"malformed HTTP request: {exc}"))
                return _CLOSED
            if event is h11.NEED_DATA:
                if conn.state == "idle" and conn.http.trailing_data[0]:
                    conn.state, conn.deadline = "head", time.monotonic() + HEAD_TIMEOUT
                return _WAIT
            if event is h11.PAUSED:
                return _WAIT  # cannot happen: a request is handed to a worker at its end
            if isinstance(event, h11.Request):
                conn.request, conn.body, conn.too_large = event, bytearray(), False
                try:
                    self._check_framing(event)
                except _Refuse as refusal:  # answered through the dispatcher, so the timeline has it; then closed
                    conn.refusal = refusal
                    return _READY
                conn.state, conn.deadline = "body", time.monotonic() + BODY_TIMEOUT
                declared = _header(event.headers, b"content-length")
                if declared is not None and int(declared) > self.max_body:
                    conn.too_large = True  # answered at once (413); what the client still sends is drained
                    return _READY
                if conn.http.they_are_waiting_for_100_continue:
                    self._send_quietly(conn, conn.http.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                conn.body += event.data
                if len(conn.body) > self.max_body:
                    del conn.body[self.max_body + 1:]
                    conn.too_large = True
                    return _READY
            elif isinstance(event, h11.EndOfMessage):
                return _READY
            elif isinstance(event, h11.ConnectionClosed):
                self._close(conn)
                return _CLOSED

    @staticmethod
    def _check_framing(request: h11.Request) -> None:
        """What h11 lets through and RFC 9112 (6.1, 6.3) tells a server to refuse, closing the connection."""
        names = [name for name, _ in request.headers]
        if b"transfer-encoding" in names:
            if b"content-length" in names:
                raise _Refuse(400, "ambiguous-framing",
                              "a request with both Transfer-Encoding and Content-Length is refused (RFC 9112 6.1)")
            if request.http_version == b"1.0":
                raise _Refuse(400, "bad-request", "Transfer-Encoding is not allowed in an HTTP/1.0 request")

    def _refuse(self, conn: _Conn, refusal: _Refuse) -> None:
        """Answer what the listener refuses before any app sees it (a malformed request, a head or body too late),
        then close."""
        body = json.dumps({"error": refusal.error, "message": refusal.message}).encode()
        head = (f"HTTP/1.1 {refusal.status} {_REASONS.get(refusal.status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self._send_quietly(conn, head.encode() + body)
        self._close(conn)

    @staticmethod
    def _send_quietly(conn: _Conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except (OSError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        if threading.current_thread() is not self._thread:
            self._hand_back(conn, "closing")
            return
        self._unregister(conn)
        self._conns.discard(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    # -- workers ----------------------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            conn = self._work.get()
            if conn is None:
                return
            try:
                if conn.state == "handshaking":
                    self._handshake(conn)
                else:
                    self._serve(conn)
            except Exception:  # noqa: BLE001 - a broken connection must never cost a worker
                log.exception("serving %s failed", conn.addr)
                self._close(conn)

    def _handshake(self, conn: _Conn) -> None:
        """The TLS handshake, without waiting on the socket; then the first request. The client's next flight (and
        then its request) usually follows within a millisecond: the worker waits LINGER for each before handing
        the connection back, which saves two trips through the selector per new connection."""
        while True:
            try:
                conn.sock.do_handshake()
                break
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if not _readable_soon(conn.sock):
                    self._hand_back(conn, "handshake")
                    return
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", conn.addr, exc)
                self._close(conn)
                return
        conn.environ = self._tls_environ(conn)
        conn.state, conn.deadline = "idle", time.monotonic() + IDLE_TIMEOUT
        outcome = self._read(conn)
        if outcome == _WAIT and not conn.http.trailing_data[0] and _readable_soon(conn.sock):
            outcome = self._read(conn)
        if outcome == _READY:
            conn.state = "busy"
            self._serve(conn)
        elif outcome == _WAIT:
            self._hand_back(conn)

    def _serve(self, conn: _Conn) -> None:
        while True:
            conn.sock.settimeout(WRITE_TIMEOUT)
            if not self._respond(conn):
                return
            if (conn.http.our_state is h11.MUST_CLOSE or conn.http.their_state is not h11.DONE
                    or conn.refusal is not None):
                if conn.http.their_state is h11.SEND_BODY:  # what it still sends is read and dropped
                    conn.drained = 0
                    self._hand_back(conn, "drain")
                else:
                    self._close(conn)
                return
            conn.http.start_next_cycle()
            conn.state, conn.deadline = "idle", time.monotonic() + IDLE_TIMEOUT
            conn.sock.setblocking(False)
            outcome = self._advance(conn)  # a pipelined request already received
            if outcome == _WAIT and not conn.http.trailing_data[0] and _readable_soon(conn.sock):
                outcome = self._read(conn)
            if outcome == _CLOSED:
                return
            if outcome != _READY:
                self._hand_back(conn)
                return

    def _environ(self, conn: _Conn) -> dict:
        request, gate = conn.request, conn.gate
        assert request is not None and gate is not None  # a parsed request head, and _respond made the gate
        body, conn.body = conn.body, bytearray()  # a kept-alive connection must not hold its last body
        target = request.target
        if target.startswith((b"http://", b"https://")):  # absolute form: the path is what follows the authority
            target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
        path, _, query = target.partition(b"?")
        # %2F stays as it is, so a path segment may carry a slash (as cheroot did)
        atoms = [unquote_to_bytes(atom) for atom in path.replace(b"%2f", b"%2F").split(b"%2F")]
        environ = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": b"%2F".join(atoms).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "REQUEST_URI": request.target.decode("latin-1"),
            "SERVER_NAME": self.address,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
            "REMOTE_ADDR": conn.addr[0],
            "REMOTE_PORT": str(conn.addr[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.input": io.BytesIO(bytes(body)),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            STREAM_GATE_KEY: gate,
            DEPARTED_KEY: gate.departed,
            **conn.environ,
        }
        if conn.refusal is not None:
            r = conn.refusal
            environ[REFUSAL_KEY] = (f"{r.status} {_REASONS.get(r.status, 'Error')}", r.error, r.message)
        for name, raw in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            value = raw.decode("latin-1")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
                continue
            key = "HTTP_" + key
            if key in environ:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
            else:
                environ[key] = value
        if conn.too_large and "CONTENT_LENGTH" not in environ:
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"  # the dispatcher reads max_body + 1 bytes and says 413
        return environ

    def _respond(self, conn: _Conn) -> bool:
        """Run the app on the request and send its answer; False when the connection is no longer the worker's."""
        conn.gate = StreamGate(self)
        environ = self._environ(conn)
        started: dict = {}

        def start_response(status, headers, exc_info=None):
            if exc_info and started.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            started["status"], started["headers"] = status, headers
            return lambda data: None  # the legacy write() callable: unused by the lab's apps

        try:
            result = self.app(environ, start_response)
        except Exception:  # noqa: BLE001 - the dispatcher answers for the apps; this is the listener's backstop
            log.exception("the app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            result = _internal_error(started)
        headers = started.get("headers", [])
        streaming = (environ["REQUEST_METHOD"] != "HEAD" and not any(k.lower() == "content-length" for k, _ in headers)
                     and int(started.get("status", "500").split()[0]) not in (204, 304)
                     and int(started.get("status", "500").split()[0]) >= 200)
        if streaming and not conn.gate.reserve():
            _close_result(result)
            body = json.dumps({"error": "too-many-streams",
                               "message": f"the lab holds at most {MAX_STREAMS} streams open; try again later"})
            result = [body.encode()]
            started["status"] = "503 Service Unavailable"
            started["headers"] = headers = [("Content-Type", "application/json"), ("Retry-After", "5"),
                                            ("Content-Length", str(len(body)))]
            streaming = False
        if streaming:
            conn.state = "stream"
            thread = threading.Thread(target=self._stream, args=(conn, started, result), name="https-stream",
                                      daemon=True)
            thread.start()
            return False
        try:
            chunks = [bytes(c) for c in result]
        except Exception:  # noqa: BLE001 - as above
            log.exception("the app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            chunks = _internal_error(started)
        finally:
            _close_result(result)
        conn.gate.release()
        out = [conn.http.send(_response(started))]
        for chunk in chunks if environ["REQUEST_METHOD"] != "HEAD" else ():
            if chunk:
                out.append(conn.http.send(h11.Data(data=chunk)))
        out.append(conn.http.send(h11.EndOfMessage()))
        try:
            conn.sock.sendall(b"".join(out))
        except (OSError, ValueError):
            self._close(conn)
            return False
        return True

    def _stream(self, conn: _Conn, started: dict, result) -> None:
        gate = conn.gate
        assert gate is not None  # _respond made it
        head_sent = watched = False
        try:
            for chunk in result:
                if gate.departed.is_set():
                    break
                if not chunk and head_sent:
                    continue
                data = b"" if head_sent else conn.http.send(_response(started))
                head_sent = True
                if chunk:
                    data += conn.http.send(h11.Data(data=bytes(chunk)))
                conn.sock.sendall(data)
                if not watched:
                    watched = True
                    self._returned.append(conn)  # the selector watches for the client leaving
                    self._wake()
            else:
                if not head_sent:
                    conn.sock.sendall(conn.http.send(_response(started)))
                conn.sock.sendall(conn.http.send(h11.EndOfMessage()))
        except (OSError, ValueError, h11.LocalProtocolError):
            pass
        finally:
            _close_result(result)
            gate.departed.set()
            gate.release()
            self._hand_back(conn, "stream-done")

    @property
    def streams(self) -> int:
        return self._streams

    # -- TLS ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _tls_environ(conn: _Conn) -> dict:
        cipher = conn.sock.cipher()
        return {"HTTPS": "on", "SSL_PROTOCOL": cipher[1] if cipher else "", "SSL_CIPHER": cipher[0] if cipher else "",
                "SSL_TLS_SNI": getattr(conn.sock, "mdmlab_sni", None) or "",
                "mdmlab.socket": conn.sock}  # for faults that must act on the connection itself


def _readable_soon(sock: ssl.SSLSocket) -> bool:
    try:
        return bool(sock.pending() or select.select([sock], [], [], LINGER)[0])
    except (OSError, ValueError):
        return False


def conn_waiting(conn: _Conn) -> bool:
    """Whether the selector thread holds ``conn`` (waiting for its client), not a worker or a stream thread."""
    return conn.state in ("handshake", "idle", "head", "body", "drain")


def _header(headers, name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def _response(started: dict) -> h11.Response:
    status, _, reason = started.get("status", "500 Internal Server Error").partition(" ")
    return h11.Response(status_code=int(status), reason=reason.encode("latin-1"),
                        headers=[(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in started["headers"]])


def _internal_error(started: dict) -> list[bytes]:
    body = b'{"error": "internal-error", "message": "the lab failed on this request"}'
    started["status"] = "500 Internal Server Error"
    started["headers"] = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                          ("Connection", "close")]
    return [body]


def _close_result(result) -> None:
    closer = getattr(result, "close", None)
    if closer is not None:
        try:
            closer()
        except Exception:  # noqa: BLE001 - an app's cleanup failing must not cost the connection's worker
            log.exception("closing a response failed")


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
