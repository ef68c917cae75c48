"""The benchmarks' load generator and process CPU accounting (bench/relay.py and its pairs
and streams): a minimal keep-alive HTTP/1.1 client, an asyncio Protocol per connection with
httptools parsing, so that its own CPU use, which shares the cores with the servers, stays
small and identical for every target it loads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-" + secrets.token_hex(12)
TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = 5  # direct and relayed rounds alternate
CONTENT = re.compile(rb'"content":"[^"]')  # an SSE chunk with a non-empty content delta


def start(cmd: list[str], marker: str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    # BENCH_STDERR=1 shows the servers' logs (a crash would otherwise look like a hang).
    err = None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                            cwd=cwd)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if marker not in line:
        proc.kill()
        raise SystemExit(f"{cmd[2]} did not start: {line!r}")
    return proc, line.split()[-1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (a relay's worker processes)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue  # exited meanwhile
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, read with httptools (the parser the relay and
    uvicorn use): the load generator's own CPU per request is about a third of what asyncio
    streams cost, and it shares the cores with the servers being measured."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        # perf_counter of the response's first byte and of its first non-empty content delta
        # (a stream's time to first token): 0.0 until seen.
        self.first_byte = 0.0
        self.first_content = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types it a BaseTransport; a TCP connection's is a Transport
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        if not self.first_content and CONTENT.search(body):
            self.first_content = time.perf_counter()
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result((self.parser.get_status_code(), b"".join(self.body)))


class Conn:
    """A keep-alive connection to one server, opened on first use, and again when the server
    has closed it while idle (uvicorn closes a keep-alive connection after 5 s without a
    request: the pairs keep a server's connections idle while the others' blocks run). Without
    the reopening, a request written to a closed transport waited forever (seen: a run hung)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: _Exchange | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        reused = self.proto is not None
        if (self.proto is None or self.proto.transport is None
                or self.proto.transport.is_closing()):
            _, self.proto = await loop.create_connection(_Exchange, self.host, self.port)
            reused = False
        proto = self.proto
        assert proto.transport is not None
        proto.body = []
        proto.first_byte = proto.first_content = 0.0
        proto.done = loop.create_future()
        proto.transport.write(head + body)
        try:
            return await proto.done
        except ConnectionError:
            if not reused:
                raise
            # closed by the server as we wrote on the idle connection: once more, on a new one
            self.proto = None
            return await self.request(head, body)

    async def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


def build(base: str, path: str, body: dict[str, object], auth: str) -> tuple[str, int, bytes,
                                                                             bytes]:
    hostport = base.removeprefix("http://")
    host, port = hostport.rsplit(":", 1)
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {hostport}\r\nauthorization: Bearer {auth}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n").encode()
    return host, int(port), head, data


@dataclass
class Result:
    latencies: list[float]
    seconds: float
    errors: int

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.errors += other.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[min(int(q * len(s)), len(s) - 1)] * 1000


async def load(base: str, path: str, body: dict[str, object], auth: str, concurrency: int,
               total: int, warmup: int) -> Result:
    host, port, head, data = build(base, path, body, auth)
    conns = [Conn(host, port) for _ in range(concurrency)]
    errors = 0

    async def worker(conn: Conn, n: int, out: list[float]) -> None:
        nonlocal errors
        for _ in range(n):
            t = time.perf_counter()
            status, _ = await conn.request(head, data)
            out.append(time.perf_counter() - t)
            if status != 200:
                errors += 1

    if warmup:
        warm: list[float] = []
        await asyncio.gather(*(worker(c, max(warmup // concurrency, 1), warm) for c in conns))
        errors = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, total // concurrency, lat) for c in conns))
    seconds = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return Result(lat, seconds, errors)
