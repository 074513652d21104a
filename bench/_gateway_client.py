"""The gateway benchmark's client, run inside a container (`python3 -c SOURCE NAME=tcp:HOST:PORT
NAME=unix:PATH ...`, the targets it may be asked to call): stdlib only, as the base image has python3
and nothing else.

It reads one JSON command per line on stdin and answers one JSON line on stdout, so that the
benchmark can alternate between a client behind the relay and one calling the upstream directly
without starting an interpreter per measurement. Every answer is checked (status 200, the exact
number of body bytes the upstream announced, the final `message_stop` event); a failure is an
answer `{"error": ...}`, never a figure.

    {"op": "seq", "target": NAME, "n": N, "reply": "BYTES,EVENTS[,PAUSE_MS]", "body": BYTES, "fresh": false}
        N requests one after the other, on one kept-alive connection (fresh: a new connection each);
        answers {"total": [seconds...], "ttfb": [seconds...], "bytes": B}
    {"op": "streams", "target": NAME, "n": N, "reply": "BYTES,EVENTS[,PAUSE_MS]", "body": BYTES}
        N requests at once, each on its own connection (opened before the clock starts);
        answers {"seconds": wall, "bytes": B, "ttfb": [...], "total": [...]}
    {"op": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

END = b'data: {"type":"message_stop"}\n\n'
LIMIT = 1 << 20
TIMEOUT = 120.0  # one request, or one batch of streams: a stuck path is an error, never a hang


class BenchClientError(Exception):
    pass


def request_bytes(body: bytes, reply: str, *, close: bool) -> bytes:
    head = (
        "POST /v1/messages HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        "anthropic-version: 2023-06-01\r\n"
        "x-api-key: sk-harness-placeholder-not-a-key\r\n"
        f"x-bench-reply: {reply}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


def make_body(size: int) -> bytes:
    """A Messages API request of about `size` bytes (one user message carries the padding)."""
    base = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": ""}]}  # fmt: skip
    pad = max(0, size - len(json.dumps(base)))
    base["messages"][0]["content"] = "x" * pad  # type: ignore[index]
    return json.dumps(base).encode()


class Connection:
    def __init__(self, target: str) -> None:
        self.target = target  # tcp:HOST:PORT or unix:PATH
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        kind, _, address = self.target.partition(":")
        if kind == "unix":
            self.reader, self.writer = await asyncio.open_unix_connection(address, limit=LIMIT)
        else:
            host, _, port = address.rpartition(":")
            self.reader, self.writer = await asyncio.open_connection(host, int(port), limit=LIMIT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes, *, close: bool) -> tuple[float, float, int]:
        """(time to the first body byte, time to the last, body bytes) of one request."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        start = time.perf_counter()
        self.writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        first = 0.0
        size = 0
        tail = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                length = int((await reader.readline()).split(b";", 1)[0], 16)
                if length == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass  # trailers
                    break
                chunk = await reader.readexactly(length)
                await reader.readexactly(2)
                first = first or time.perf_counter()
                size += length
                tail = (tail + chunk)[-64:]
        elif "content-length" in headers:
            chunk = await reader.readexactly(int(headers["content-length"]))
            first, size, tail = time.perf_counter(), len(chunk), chunk[-64:]
        else:
            while chunk := await reader.read(LIMIT):
                first = first or time.perf_counter()
                size += len(chunk)
                tail = (tail + chunk)[-64:]
            close = True
        end = time.perf_counter()
        if close or headers.get("connection", "").lower() == "close":
            self.close()
        if status != 200:
            raise BenchClientError(f"status {status}: {tail[-200:]!r}")
        expected = int(headers.get("x-bench-body-bytes", "-1"))
        if size != expected or not tail.endswith(END):
            raise BenchClientError(f"got {size} body bytes of {expected}, ending {tail[-40:]!r}")
        return first - start, end - start, size


async def seq(target: str, cmd: dict[str, Any]) -> dict[str, Any]:
    data = request_bytes(make_body(cmd.get("body", 2000)), cmd["reply"], close=cmd.get("fresh", False))
    conn = Connection(target)
    ttfb: list[float] = []
    total: list[float] = []
    size = 0
    try:
        for _ in range(cmd["n"]):
            first, last, got = await asyncio.wait_for(conn.request(data, close=cmd.get("fresh", False)), TIMEOUT)
            ttfb.append(round(first, 7))
            total.append(round(last, 7))
            size += got
    finally:
        conn.close()
    return {"ttfb": ttfb, "total": total, "bytes": size}


async def streams(target: str, cmd: dict[str, Any]) -> dict[str, Any]:
    data = request_bytes(make_body(cmd.get("body", 2000)), cmd["reply"], close=True)
    conns = [Connection(target) for _ in range(cmd["n"])]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.open() for c in conns)), TIMEOUT)
        start = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(c.request(data, close=True) for c in conns)), TIMEOUT)
        seconds = time.perf_counter() - start
    finally:
        for c in conns:
            c.close()
    return {
        "seconds": seconds,
        "bytes": sum(r[2] for r in results),
        "ttfb": [round(r[0], 7) for r in results],
        "total": [round(r[1], 7) for r in results],
    }


async def main(targets: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            answer = await (seq if cmd["op"] == "seq" else streams)(targets[cmd["target"]], cmd)
        except (OSError, ValueError, KeyError, asyncio.IncompleteReadError, TimeoutError, BenchClientError) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(dict(arg.split("=", 1) for arg in sys.argv[1:])))
