"""The lab under idle, slow and streaming clients, all at once (issue 13 §1: F1, F2, F10).

A lab runs in its own process (`mdmlab up`). First, on the idle lab: /api/health latency and the time of one
enrollment (device + check-in, lab.fleet). Then an attacker process (here, asyncio) holds, on 127.0.0.1 only:

  idle      500 TLS connections that finish the handshake and say nothing (reopened when the lab closes them)
  slowloris 60 connections sending a request head (30) or a declared 1 MB body (30) one byte every 2 s
  hello     8 loops that send 5 bytes of a ClientHello, then wait for the lab to close, and start again
  streams   60 × GET /api/events/stream, read as they come (reopened when they end)

and the same measures are taken again, in the same run: health latency (each probe a new TLS connection, cut
at PROBE_TIMEOUT), enrollment time, and the lab's peak memory, threads and CPU. Targets (issue 13): health within
1 s, an enrollment within 2x its idle time (medians compared; the worst is reported too), memory under 300 MB.

    .venv/bin/python benchmarks/hostile.py                 # about 90 s
    .venv/bin/python benchmarks/hostile.py --hold 30        # shorter
    .venv/bin/python benchmarks/hostile.py --only streams   # one kind of attack
    .venv/bin/python benchmarks/hostile.py --lab-from ../old  # the lab of another checkout (the design before)

Bounded: at most MAX_CONNECTIONS sockets at once and the attack ends after --hold seconds (MAX_HOLD at most).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import cpu_seconds, lab_info, memory_kb, start_lab, stop_lab  # noqa: E402

IDLE, SLOW, HELLO_LOOPS, STREAMS = 500, 60, 8, 60
KINDS = ("idle", "slowloris", "hello", "streams")
MAX_CONNECTIONS = 700
MAX_HOLD = 300.0
READY_WAIT = 30.0  # the longest the attack may take to open its connections before the measures start
PROBE_TIMEOUT = 40.0
TRICKLE = 2.0  # seconds between the bytes of a slowloris connection
HELLO_PREFIX = bytes.fromhex("1603010200")  # a TLS record header announcing a ClientHello that never comes


# -- the attacker (a child process) -----------------------------------------------------------------------------

class _Attack:
    def __init__(self, port: int, ca: str, hold: float, kinds: set[str]):
        self.kinds = kinds
        self.port, self.hold = port, hold
        self.ctx = ssl.create_default_context(cafile=ca)
        self.open = 0
        self.stats = {"idle_open_peak": 0, "idle_reopened": 0, "slow_reopened": 0, "hello_rounds": 0,
                      "streams_open_peak": 0, "streams_refused": 0, "stream_bytes": 0}
        self._idle_open = 0
        self._streams_open = 0
        self.deadline = time.monotonic() + hold
        self._opening = asyncio.Semaphore(16)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def _tls(self, host: str):
        if self.open >= MAX_CONNECTIONS:
            raise OSError("connection cap")
        async with self._opening:  # a few handshakes at a time, so this one process finishes each in time
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.ctx, server_hostname=host,
                ssl_handshake_timeout=max(self.left(), 1)), timeout=max(self.left(), 1))
        self.open += 1
        return reader, writer

    def _closed(self, writer) -> None:
        self.open -= 1
        writer.transport.abort()

    async def idle(self) -> None:
        while self.left() > 0:
            try:
                reader, writer = await self._tls("mdm.lab.test")
            except (TimeoutError, OSError, ssl.SSLError):
                await asyncio.sleep(0.5)
                continue
            self._idle_open += 1
            self.stats["idle_open_peak"] = max(self.stats["idle_open_peak"], self._idle_open)
            try:
                await asyncio.wait_for(reader.read(1), timeout=max(self.left(), 0.01))
                self.stats["idle_reopened"] += 1
            except (TimeoutError, OSError, ssl.SSLError):
                pass
            self._idle_open -= 1
            self._closed(writer)

    async def slowloris(self, body: bool) -> None:
        if body:
            head = (b"PUT /mdm/checkin HTTP/1.1\r\nHost: mdm.lab.test\r\nContent-Type: application/x-apple-aspen-mdm"
                    b"-checkin\r\nContent-Length: 1000000\r\n\r\n")
            trickle = b"<" * 1000
        else:
            head, trickle = b"", b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 4000
        while self.left() > 0:
            try:
                reader, writer = await self._tls("mdm.lab.test" if body else "localhost")
            except (TimeoutError, OSError, ssl.SSLError):
                await asyncio.sleep(0.5)
                continue
            try:
                if head:
                    writer.write(head)
                for i in range(len(trickle)):
                    if self.left() <= 0:
                        break
                    writer.write(trickle[i:i + 1])
                    await writer.drain()
                    try:  # the lab may answer (408) or close: then start again
                        data = await asyncio.wait_for(reader.read(4096), timeout=min(TRICKLE, max(self.left(), 0.01)))
                        if data or reader.at_eof():
                            break
                    except TimeoutError:
                        pass
                self.stats["slow_reopened"] += 1
            except (OSError, ssl.SSLError):
                pass
            self._closed(writer)

    async def hello(self) -> None:
        while self.left() > 0:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            except (TimeoutError, OSError):
                await asyncio.sleep(0.5)
                continue
            self.open += 1
            try:
                writer.write(HELLO_PREFIX)
                await asyncio.wait_for(reader.read(1), timeout=max(self.left(), 0.01))
            except (TimeoutError, OSError):
                pass
            self.stats["hello_rounds"] += 1
            self._closed(writer)

    async def stream(self) -> None:
        while self.left() > 0:
            try:
                reader, writer = await self._tls("localhost")
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                key = f"stream_connect_{type(exc).__name__}"
                self.stats[key] = self.stats.get(key, 0) + 1
                await asyncio.sleep(0.5)
                continue
            try:
                writer.write(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=max(self.left(), 0.01))
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    self.stats["streams_refused"] += 1
                    await asyncio.sleep(1)
                else:
                    self._streams_open += 1
                    self.stats["streams_open_peak"] = max(self.stats["streams_open_peak"], self._streams_open)
                    try:
                        while self.left() > 0:
                            data = await asyncio.wait_for(reader.read(65536), timeout=max(self.left(), 0.01))
                            if not data:
                                break
                            self.stats["stream_bytes"] += len(data)
                    finally:
                        self._streams_open -= 1
            except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                key = f"stream_{type(exc).__name__}"
                self.stats[key] = self.stats.get(key, 0) + 1
            self._closed(writer)

    async def _announce_ready(self) -> None:
        """Tell the measuring process when every connection of the attack is open (or after READY_WAIT)."""
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline:
            if (self._idle_open >= (IDLE if "idle" in self.kinds else 0)
                    and self._streams_open >= (STREAMS if "streams" in self.kinds else 0)):
                break
            await asyncio.sleep(0.2)
        print("ready", flush=True)

    async def run(self) -> dict:
        tasks = [self.idle() for _ in range(IDLE if "idle" in self.kinds else 0)]
        tasks += [self.slowloris(body=i % 2 == 1) for i in range(SLOW if "slowloris" in self.kinds else 0)]
        tasks += [self.hello() for _ in range(HELLO_LOOPS if "hello" in self.kinds else 0)]
        tasks += [self.stream() for _ in range(STREAMS if "streams" in self.kinds else 0)]
        tasks.append(self._announce_ready())
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=self.hold + 30)
        return self.stats


def attack_main(port: int, ca: str, hold: float, kinds: str) -> None:
    stats = asyncio.run(_Attack(port, ca, min(hold, MAX_HOLD), set(kinds.split(","))).run())
    print(json.dumps(stats), flush=True)


# -- the measures (this process) --------------------------------------------------------------------------------

def health_ms(port: int, ca: str) -> float | None:
    """One GET /api/health on a new TLS connection; None when no answer came within PROBE_TIMEOUT."""
    started = time.perf_counter()
    conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca),
                                       timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def enroll_ms(target, index: int) -> float | None:
    from lab import fleet
    result = fleet.enroll_one(target, index, "iPhone")
    return result.total_ms if result.ok else None


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _probe_round(port: int, ca: str, target, rounds: int, first_index: int, budget: float) -> dict:
    health, enroll = [], []
    deadline = time.monotonic() + budget
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        health.append(health_ms(port, ca))
        enroll.append(enroll_ms(target, first_index + i))
    return {"health_ms": health, "enroll_ms": enroll}


def _stats(values: list[float | None]) -> dict:
    ok = [v for v in values if v is not None]
    return {"answered": len(ok), "of": len(values), "p50_ms": round(statistics.median(ok), 1) if ok else None,
            "max_ms": round(max(ok), 1) if ok else None}


def measure(hold: float = 60.0, rounds: int = 6, kinds: str = ",".join(KINDS), root: Path | None = None) -> dict:
    from lab import fleet
    hold = min(hold, MAX_HOLD)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        proc = start_lab(state_dir, "--fresh", **({"root": root} if root else {}))
        attacker = None
        try:
            time.sleep(0.3)
            info = lab_info(state_dir)
            port, ca = info["https_port"], info["ca_cert"]
            target = fleet.Target.from_info(info)
            fleet.run(target, 10, 2)  # first-use costs out of the figures
            idle = _probe_round(port, ca, target, rounds, 100, 60)
            rss_idle = memory_kb(proc.pid)["VmRSS"]
            attacker = subprocess.Popen([sys.executable, __file__, "--attack", str(port), ca, str(hold), kinds],
                                        stdout=subprocess.PIPE, text=True)
            started = time.monotonic()
            attacker.stdout.readline()  # "ready": the attack's connections are open
            ramp = time.monotonic() - started
            peak = {"rss_kb": 0, "threads": 0}
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.25):
                    try:
                        peak["rss_kb"] = max(peak["rss_kb"], memory_kb(proc.pid)["VmRSS"])
                        peak["threads"] = max(peak["threads"], _threads(proc.pid))
                    except OSError:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu0 = cpu_seconds(proc.pid)
            wall0 = time.monotonic()
            attacked = _probe_round(port, ca, target, rounds, 200, max(hold - ramp - 2, 5))
            lab_cpu_share = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
            done.set()
            sampler.join()
            try:
                out, _ = attacker.communicate(timeout=hold + 60)
                out = out.replace("ready\n", "")
                attack_stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            except subprocess.TimeoutExpired:
                attacker.kill()
                attack_stats = {}
            after = _probe_round(port, ca, target, 2, 300, 60)
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
            stop_lab(proc)
    idle_enroll, attacked_enroll = _stats(idle["enroll_ms"]), _stats(attacked["enroll_ms"])
    ratio = (attacked_enroll["p50_ms"] / idle_enroll["p50_ms"]
             if attacked_enroll["p50_ms"] and idle_enroll["p50_ms"] else None)
    worst = (attacked_enroll["max_ms"] / idle_enroll["p50_ms"]
             if attacked_enroll["max_ms"] and idle_enroll["p50_ms"] else None)
    result = {
        "idle": {"health": _stats(idle["health_ms"]), "enroll": idle_enroll, "rss_mb": round(rss_idle / 1024, 1)},
        "attacked": {"health": _stats(attacked["health_ms"]), "enroll": attacked_enroll,
                     "peak_rss_mb": round(peak["rss_kb"] / 1024, 1), "peak_threads": peak["threads"],
                     "lab_cpu_share": round(lab_cpu_share, 2)},
        "after": {"health": _stats(after["health_ms"]), "enroll": _stats(after["enroll_ms"])},
        "attack": {**attack_stats, "seconds_to_open": round(ramp, 1)},
        "enroll_ratio_p50": round(ratio, 2) if ratio else None,
        "enroll_ratio_worst_to_idle_p50": round(worst, 2) if worst else None,
    }
    h = result["attacked"]["health"]
    result["meets"] = {
        "health_within_1s": h["answered"] == h["of"] and (h["max_ms"] or 1e9) < 1000,
        "enroll_within_2x": attacked_enroll["answered"] == attacked_enroll["of"] and ratio is not None and ratio <= 2,
        "memory_under_300mb": peak["rss_kb"] / 1024 < 300,
    }
    return result


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--attack":
        attack_main(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the attack lasts (at most 300)")
    parser.add_argument("--rounds", type=int, default=6, help="health probes and enrollments in each phase")
    parser.add_argument("--only", default=",".join(KINDS), help=f"attacks to run, of {','.join(KINDS)}")
    parser.add_argument("--lab-from", type=Path, default=None, help="attack the lab of this checkout (another design)")
    args = parser.parse_args()
    r = measure(args.hold, args.rounds, args.only, args.lab_from)
    i, a = r["idle"], r["attacked"]
    print(f"idle lab:  health p50 {i['health']['p50_ms']} ms; enrollment p50 {i['enroll']['p50_ms']} ms "
          f"({i['enroll']['answered']}/{i['enroll']['of']} ok)")
    print(f"attacked:  health {a['health']['answered']}/{a['health']['of']} answered, p50 {a['health']['p50_ms']} "
          f"max {a['health']['max_ms']} ms; enrollment {a['enroll']['answered']}/{a['enroll']['of']} ok, p50 "
          f"{a['enroll']['p50_ms']} max {a['enroll']['max_ms']} ms ({r['enroll_ratio_p50']}x idle at p50, worst "
          f"{r['enroll_ratio_worst_to_idle_p50']}x); "
          f"peak RSS {a['peak_rss_mb']} MB, {a['peak_threads']} threads, lab CPU {a['lab_cpu_share']} cores")
    print(f"attack:    {r['attack']}")
    print(f"targets:   {r['meets']}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
