"""One HTTPS listener for every lab host: cheroot, a TLS context per host chosen by SNI.

cheroot's stock TLS adapter does the handshake in its accept loop, so one client that connects and says nothing
stalls every other client. Here the accept loop only wraps the socket; the handshake happens in a worker thread
at the start of the connection's first request, and a failed handshake closes that connection quietly.
"""
from __future__ import annotations

import io
import logging
import select
import socket
import ssl
import threading
import time
from pathlib import Path

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.workers import threadpool

from lab.dispatch import DRAIN_LIMIT

log = logging.getLogger("mdmlab.server")
HANDSHAKE_TIMEOUT = 5.0
MAX_HEADER_BYTES = 64 * 1024
WORKER_THREADS = 48
REQUEST_QUEUE = 128
# Idle keep-alive connections kept open (cheroot's default is 10: past that it closes each connection after its
# response, so a fleet of more than a few devices paid a new TLS handshake for most requests). Each costs a socket
# and ~40 kB; the 30 s idle timeout still closes them.
KEEP_ALIVE_LIMIT = 512
LINGER = 0.005  # seconds a worker waits for a keep-alive client's next request


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


class _CountingSocketIO(socket.SocketIO):
    """The raw socket under the reader, counting what it received, so ``has_data`` can tell what is buffered."""

    received = 0

    def readinto(self, b):
        n = super().readinto(b)
        if n:
            self.received += n
        return n


class _Reader(io.BufferedReader):
    """cheroot's StreamReader on the C buffered reader: cheroot's own is pure Python (_pyio), several times slower
    at reading request lines and headers."""

    def __init__(self, sock, bufsize=io.DEFAULT_BUFFER_SIZE):
        super().__init__(_CountingSocketIO(sock, "rb"), bufsize)
        self.bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def read1(self, size=-1):
        data = super().read1(size)
        self.bytes_read += len(data)
        return data

    def readline(self, size=-1):
        data = super().readline(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, b):
        n = super().readinto(b)
        self.bytes_read += n or 0
        return n

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def has_data(self) -> bool:
        """Bytes already received and not yet consumed (the next request of a pipelining client)."""
        return self.raw.received > self.bytes_read


class _Writer:
    """Sends each write at once, except a response's header block, which waits for the first body chunk so both
    leave in one TLS record; ``flush`` (after each request) sends a header block left alone (an empty body)."""

    def __init__(self, sock):
        self._sock = sock
        self._pending = b""
        self.bytes_written = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        if not self._pending and data.endswith(b"\r\n\r\n"):
            self._pending = data
            return len(data)
        if self._pending:
            data, self._pending = self._pending + data, b""
        self._sock.sendall(data)
        self.bytes_written += len(data)
        return len(data)

    def flush(self) -> None:
        if self._pending:
            data, self._pending = self._pending, b""
            self._sock.sendall(data)
            self.bytes_written += len(data)

    def close(self) -> None:
        try:
            self.flush()
        except OSError:
            pass
        self.closed = True


class _DeferredHandshakeAdapter:
    """The part of cheroot's SSL adapter interface the server uses, minus the blocking handshake."""

    def __init__(self, contexts: HostContexts):
        self.contexts = contexts

    def bind(self, sock):
        return sock

    def wrap(self, sock):
        wrapped = self.contexts.default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, {}

    def makefile(self, sock, mode="r", bufsize=-1):
        if "r" in mode:
            return _Reader(sock, bufsize if bufsize > 0 else io.DEFAULT_BUFFER_SIZE)
        return _Writer(sock)


class _Connection(cheroot_server.HTTPConnection):
    handshaken = False

    def communicate(self):
        if not self.handshaken:
            if not select.select([self.socket], [], [], 0)[0]:
                return True  # nothing sent yet: back to cheroot's selector, so an idle client holds no worker
            try:
                self.socket.settimeout(HANDSHAKE_TIMEOUT)
                self.socket.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                return False
            self.handshaken = True
            self.socket.settimeout(self.server.timeout)
            cipher = self.socket.cipher()
            self.ssl_env = {
                "wsgi.url_scheme": "https", "HTTPS": "on",
                "SSL_PROTOCOL": cipher[1] if cipher else "", "SSL_CIPHER": cipher[0] if cipher else "",
                "SSL_TLS_SNI": getattr(self.socket, "mdmlab_sni", None) or "",
                "mdmlab.socket": self.socket,  # for faults that must act on the connection itself
            }
        try:
            while True:
                keep_open = super().communicate()
                try:
                    self.wfile.flush()
                except OSError:
                    return False  # the client is gone
                if not keep_open or not self._next_request_soon():
                    return keep_open
        finally:
            try:
                self.wfile.flush()
            except OSError:
                pass

    def _next_request_soon(self) -> bool:
        """Whether the client's next request is here, or arrives within LINGER: a device's next exchange usually
        follows within a few milliseconds, and serving it from this worker saves the round trip through cheroot's
        selector and request queue. A quiet client goes back to the selector after LINGER, holding no worker."""
        if self.rfile.has_data() or self.socket.pending():
            return True
        return bool(select.select([self.socket], [], [], LINGER)[0])


class _ThreadPool(threadpool.ThreadPool):
    """cheroot's pool waits for its workers in steps of 100 ms, which made a third of the lab's start-up; here
    in steps of a millisecond."""

    def grow(self, amount):
        budget = max(self.max - len(self._threads), 0)
        workers = [self._spawn_worker() for _ in range(min(amount, budget))]
        deadline = time.monotonic() + 10
        for worker in workers:
            while not worker.ready and time.monotonic() < deadline:
                time.sleep(0.001)
        self._threads.extend(workers)


class HTTPSServer:
    """cheroot WSGI server bound at construction, so the port is known before the apps are built."""

    def __init__(self, contexts: HostContexts, address: str = "127.0.0.1", port: int = 0):
        self.contexts = contexts
        self.server = wsgi.Server((address, port), self._not_ready, numthreads=WORKER_THREADS,
                                  request_queue_size=REQUEST_QUEUE, timeout=30, shutdown_timeout=2,
                                  accepted_queue_size=-1)
        self.server.requests = _ThreadPool(self.server, min=WORKER_THREADS, max=WORKER_THREADS,
                                           accepted_queue_size=-1, accepted_queue_timeout=10)
        self.server.ConnectionClass = _Connection
        self.server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
        self.server.max_request_header_size = MAX_HEADER_BYTES
        self.server.max_request_body_size = DRAIN_LIMIT  # backstop; the dispatcher answers 413 above MAX_BODY
        self.server.error_log = self._error_log
        self.server.ssl_adapter = _DeferredHandshakeAdapter(contexts)
        self.server.nodelay = True
        self.server.prepare()  # binds the socket
        self.server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address = address
        self.port = self.server.bind_addr[1]
        self._thread: threading.Thread | None = None

    @staticmethod
    def _error_log(msg="", level=20, traceback=False):
        """cheroot prints dropped connections with tracebacks; a lab breaks connections on purpose."""
        log.debug("cheroot: %s", msg, exc_info=traceback)

    @staticmethod
    def _not_ready(environ, start_response):
        start_response("503 Service Unavailable", [("Content-Type", "application/json"), ("Retry-After", "1")])
        return [b'{"error": "starting", "message": "the lab is starting"}']

    def set_app(self, app) -> None:
        self.server.wsgi_app = app

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve, name="https", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
