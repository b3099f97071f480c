"""The lab's DNS on the wire: one UDP and one TCP socket on the same port, served by one selector thread.

What a packet gets (RFC 1035, 6891, 7766), whatever it holds:
- silence for a runt (under 12 bytes), a response (QR=1: answering one could start a loop between two servers) and
  anything from the lab's own address and port (a spoofed packet must not make the lab talk to itself);
- NOTIMP for every opcode but QUERY (UPDATE, NOTIFY: nothing is changed by a packet), FORMERR for garbage and for
  anything but exactly one question, and FORMERR too when an answer cannot be packed (an illegal name): never a
  traceback;
- over UDP, an answer longer than 512 bytes, or than the size the client's EDNS record offers, is cut to its header
  and question with TC set, so the client retries over TCP: the lab amplifies nothing.
- TCP: many connections without a thread each; a length prefix or message split across reads is reassembled,
  pipelined queries are each answered, a connection that is idle, or slower than ``TCP_MESSAGE_DEADLINE`` to deliver
  a message, is closed, and past ``TCP_MAX_CONNECTIONS`` the oldest goes.
- Forwarding (``resolver.upstream``: real devices need every other name) only for clients of the networks the lab
  serves (loopback, private and link-local addresses, the listen address's own /24 or /64): never an open
  forwarder. Forwarded queries wait on the upstream in a bounded pool (``FORWARD_WORKERS``, ``FORWARD_BACKLOG``);
  past that they get SERVFAIL at once.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSRecord
from dnslib.buffer import Buffer

log = logging.getLogger("mdmlab.dns")

UDP_LIMIT = 512  # RFC 1035, without EDNS
EDNS_LIMIT = 4096  # the most a client's EDNS record can ask for
EDNS_OFFER = 1232  # the size the lab offers in its own EDNS record (DNS flag day 2020)
TCP_IDLE_TIMEOUT = 5.0  # between messages
TCP_MESSAGE_DEADLINE = 5.0  # from a message's first byte to its last
TCP_MAX_CONNECTIONS = 256
TCP_BACKLOG = 128
FORWARD_WORKERS = 8
FORWARD_BACKLOG = 256  # forwarded queries waiting or running; more get SERVFAIL
TICK = 0.25


class DNSStartError(OSError):
    pass


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def header_reply(header: DNSHeader, rcode: int) -> bytes:
    """A reply of header only: to garbage, and to opcodes the lab does not implement."""
    return DNSRecord(DNSHeader(id=header.id, qr=1, opcode=header.opcode, rd=header.rd, rcode=rcode)).pack()


def edns_size(request: DNSRecord) -> int | None:
    """The UDP payload size the client's EDNS record offers, or None without one."""
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_LIMIT, min(rr.rclass, EDNS_LIMIT))
    return None


def fit(request: DNSRecord, reply: DNSRecord, limit: int | None) -> bytes:
    """``reply`` packed; over UDP (``limit``) cut to header and question with TC set when it is longer."""
    size = edns_size(request)
    if size is not None and not any(rr.rtype == QTYPE.OPT for rr in reply.ar):
        reply.add_ar(EDNS0(udp_len=EDNS_OFFER))
    packed = reply.pack()
    if limit is None:
        return packed
    limit = size or limit
    if len(packed) <= limit:
        return packed
    cut = DNSRecord(DNSHeader(id=reply.header.id, qr=1, aa=reply.header.aa, tc=1, rd=reply.header.rd,
                              ra=reply.header.ra, rcode=reply.header.rcode), q=request.q)
    if size is not None:
        cut.add_ar(EDNS0(udp_len=EDNS_OFFER))
    return cut.pack()


class Wire:
    """From one packet to its answer (or silence); the resolver does the DNS, this does the protocol."""

    def __init__(self, resolver, own: tuple | None = None, served=None):
        self.resolver = resolver
        self.own = own  # (address, port) of the lab's DNS: packets from there are dropped
        self.served = served or (lambda client: True)

    def request(self, data: bytes, protocol: str, client=None) -> tuple[DNSRecord | None, bytes | None]:
        """(the parsed query, None) to resolve, or (None, an immediate answer or None for silence)."""
        if len(data) < 12 or (client is not None and self.own is not None and tuple(client[:2]) == self.own):
            return None, None
        header = DNSHeader.parse(Buffer(data[:12]))
        if header.qr:
            return None, None
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error, UnicodeError):
            request = None
        if header.opcode != OPCODE.QUERY and (request is not None or header.opcode in OPCODE.forward):
            self.resolver.record_refusal(len(data), protocol, f"opcode {OPCODE.get(header.opcode)}", RCODE.NOTIMP)
            return None, header_reply(header, RCODE.NOTIMP)
        if request is None or len(request.questions) != 1:
            self.resolver.record_garbage(len(data), protocol)
            return None, header_reply(header, RCODE.FORMERR)
        return request, None

    def forwards(self, request: DNSRecord) -> bool:
        return self.resolver.forwards(request)

    def answer(self, request: DNSRecord, protocol: str, client=None, reply: DNSRecord | None = None) -> bytes | None:
        """The packed answer to ``request`` (``reply`` if already resolved, e.g. forwarded), or None: no answer."""
        if reply is None:
            if self.forwards(request) and client is not None and not self.served(client[0]):
                reply = self.resolver.refuse(request, protocol)
            else:
                reply = self.resolver.resolve(request, protocol)
        if reply is None:
            return None
        try:
            return fit(request, reply, UDP_LIMIT if protocol == "udp" else None)
        except Exception as exc:  # an illegal name (dnslib cannot pack it): FORMERR, no traceback per packet
            log.debug("cannot pack the answer to %s: %s", request.q.qname, exc)
            return header_reply(request.header, RCODE.FORMERR)

    def reply(self, data: bytes, protocol: str = "udp", client=None) -> bytes | None:
        """One packet in, its answer out (None: silence); forwarding runs inline (the server uses its pool)."""
        request, immediate = self.request(data, protocol, client)
        return immediate if request is None else self.answer(request, protocol, client)


def serves(listen: str):
    """Who may use the lab as a forwarder: loopback, private and link-local clients, and the listen address's
    own network (its /24, or /64 for IPv6)."""
    own = ipaddress.ip_network(f"{listen}/{64 if ':' in listen else 24}", strict=False)

    def check(client: str) -> bool:
        try:
            ip = ipaddress.ip_address(client.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or ip.is_private or ip.is_link_local or (ip.version == own.version and ip in own)
    return check


class _Connection:
    def __init__(self, sock: socket.socket, peer):
        self.sock, self.peer = sock, peer
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.last = time.monotonic()
        self.started: float | None = None  # first byte of the message being received
        self.pending = 0  # forwarded queries not yet answered


class LabDNS:
    """UDP and TCP servers on the same port, sharing one resolver, served by one thread (plus the forward pool)."""

    def __init__(self, resolver, address: str = "127.0.0.1", port: int = 0):
        self.resolver = resolver
        self.address = address
        attempts = 20 if port == 0 else 1
        last_error: OSError | None = None
        for _ in range(attempts):
            try:
                self.udp = self._bind(socket.SOCK_DGRAM, port)
                try:
                    self.tcp = self._bind(socket.SOCK_STREAM, self.udp.getsockname()[1])
                except OSError:
                    self.udp.close()
                    raise
                break
            except OSError as exc:
                last_error = exc
        else:
            assert last_error is not None  # every attempt failed, so there was one
            raise DNSStartError(last_error.errno or errno.EADDRINUSE,
                                f"cannot bind DNS on {address}:{port} (UDP and TCP): {last_error.strerror}")
        self.port = self.udp.getsockname()[1]
        upstream = getattr(resolver, "upstream", None)
        if upstream is not None and (upstream[0], upstream[1]) == (address, self.port):
            self.udp.close()
            self.tcp.close()
            raise DNSStartError(errno.EINVAL, f"the upstream {address}:{self.port} is the lab's own DNS")
        self.wire = Wire(resolver, (address, self.port), serves(address))
        self._selector = selectors.DefaultSelector()
        self._connections: dict[socket.socket, _Connection] = {}
        self._done: list[tuple[_Connection, bytes | None]] = []  # forwarded TCP answers for the loop to send
        self._done_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._pool = ThreadPoolExecutor(FORWARD_WORKERS, thread_name_prefix="dns-forward")
        self._slots = threading.BoundedSemaphore(FORWARD_BACKLOG)
        self._running = False
        self._thread: threading.Thread | None = None

    def _bind(self, kind: int, port: int) -> socket.socket:
        sock = socket.socket(_family(self.address), kind)
        try:
            if kind == socket.SOCK_STREAM:  # never for UDP: two UDP sockets with it share a port and split queries
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(TCP_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    # -- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        for sock in (self.udp, self.tcp, self._wake_r):
            self._selector.register(sock, selectors.EVENT_READ)
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._serve, name="dns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._connections.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self.udp, self.tcp, self._wake_r, self._wake_w):
            sock.close()

    def connections(self) -> int:
        return len(self._connections)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while self._running:
            for key, events in self._selector.select(TICK):
                try:
                    self._ready(key.fileobj, events)
                except Exception:  # one bad client must never stop the DNS
                    log.debug("dns: error serving %s", key.fileobj, exc_info=True)
            self._send_forwarded()
            self._expire()

    def _ready(self, sock, events: int) -> None:
        if sock is self.udp:
            self._read_udp()
        elif sock is self.tcp:
            self._accept()
        elif sock is self._wake_r:
            try:
                while self._wake_r.recv(512):
                    pass
            except BlockingIOError:
                pass
        else:
            conn = self._connections.get(sock)
            if conn is None:
                return
            if events & selectors.EVENT_READ:
                self._read_tcp(conn)
            if events & selectors.EVENT_WRITE and conn.sock in self._connections:
                self._flush(conn)

    def _read_udp(self) -> None:
        for _ in range(64):  # a bounded batch, then the TCP clients get their turn
            try:
                data, client = self.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                continue
            request, immediate = self.wire.request(data, "udp", client)
            if request is None:
                self._send_udp(immediate, client)
            elif self.wire.forwards(request) and self.wire.served(client[0]):
                self._forward(request, "udp", lambda reply, c=client: self._send_udp(reply, c))
            else:
                self._send_udp(self.wire.answer(request, "udp", client), client)

    def _send_udp(self, packet: bytes | None, client) -> None:
        if packet is not None:
            try:
                self.udp.sendto(packet, client)
            except OSError:
                pass

    def _forward(self, request: DNSRecord, protocol: str, send) -> None:
        """Ask the upstream in the pool; when the pool is full, SERVFAIL at once."""
        if not self._slots.acquire(blocking=False):
            send(self.wire.answer(request, protocol, reply=self.resolver.servfail(request, protocol)))
            return

        def job():
            try:
                send(self.wire.answer(request, protocol, reply=self.resolver.forward(request, protocol)))
            finally:
                self._slots.release()
        try:
            self._pool.submit(job)
        except RuntimeError:  # stopping
            self._slots.release()

    # -- TCP -------------------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._connections) >= TCP_MAX_CONNECTIONS:
                self._close(min(self._connections.values(), key=lambda c: c.last))
            sock.setblocking(False)
            conn = _Connection(sock, peer)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _read_tcp(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65537)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        now = time.monotonic()
        conn.last = now
        conn.inbox += data
        if conn.started is None:
            conn.started = now
        while len(conn.inbox) >= 2:
            length = struct.unpack("!H", conn.inbox[:2])[0]
            if len(conn.inbox) < 2 + length:
                break
            message = bytes(conn.inbox[2:2 + length])
            del conn.inbox[:2 + length]
            conn.started = now if conn.inbox else None
            self._answer_tcp(conn, message)
            if conn.sock not in self._connections:
                return

    def _answer_tcp(self, conn: _Connection, message: bytes) -> None:
        request, immediate = self.wire.request(message, "tcp", conn.peer)
        if request is None:
            self._queue(conn, immediate)
        elif self.wire.forwards(request) and self.wire.served(conn.peer[0]):
            conn.pending += 1
            self._forward(request, "tcp", lambda reply, c=conn: self._forwarded(c, reply))
        else:
            self._queue(conn, self.wire.answer(request, "tcp", conn.peer))

    def _forwarded(self, conn: _Connection, reply: bytes | None) -> None:
        with self._done_lock:
            self._done.append((conn, reply))
        self._wake()

    def _send_forwarded(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for conn, reply in done:
            conn.pending -= 1
            if conn.sock in self._connections:
                self._queue(conn, reply)

    def _queue(self, conn: _Connection, packet: bytes | None) -> None:
        if packet is None:
            return
        conn.outbox += struct.pack("!H", len(packet)) + packet
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
            del conn.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)
            return
        self._selector.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0))

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self._connections.values()):
            slow = conn.started is not None and now - conn.started > TCP_MESSAGE_DEADLINE
            idle = now - conn.last > TCP_IDLE_TIMEOUT and not conn.pending
            if slow or idle:
                self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def query(name: str, rtype: str, server: str, port: int, *, tcp: bool = False, timeout: float = 2.0) -> DNSRecord:
    """One query to the lab DNS; raises OSError (incl. socket.timeout) when the server does not answer."""
    packet = DNSRecord.question(name, rtype).send(server, port, tcp=tcp, timeout=timeout,
                                                  ipv6=":" in server)
    return DNSRecord.parse(packet)
