"""The egress allowlist proxy, driven through its Unix socket against servers on loopback."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import shutil
import socket
import tempfile
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.base.errors import JournalError, UsageError
from runner.gateway import egress
from runner.gateway.egress import (
    BODY_HOLD,
    AllowRule,
    EgressProxy,
    _ChunkLines,
    forbidden_reason,
    parse_allow_host,
    system_resolver,
)
from runner.gateway.loop import ServerThread

DEADLINE = 10.0


@pytest.fixture(autouse=True)
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A connection handler that raises (instead of answering and logging) fails the test."""
    yield
    gc.collect()  # a task that failed unseen is reported when it is collected
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]  # records: teardown's
    assert [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


@pytest.fixture
def net_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="hx-egress-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- parse_allow_host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com", "example.com", 443),
        ("Example.COM:8080", "example.com", 8080),
        ("example.com.", "example.com", 443),
        ("api.example.com.:80", "api.example.com", 80),
        ("127.0.0.1:9000", "127.0.0.1", 9000),
        ("[::1]:8443", "::1", 8443),
        ("[2001:DB8:0:0::1]", "2001:db8::1", 443),
        ("under_score.example", "under_score.example", 443),
    ],
)
def test_parse_allow_host(text: str, host: str, port: int) -> None:
    assert parse_allow_host(text) == AllowRule(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://example.com",
        "example.com/path",
        "exa mple.com",
        "*.example.com",
        "example..com",
        "-bad.example",
        "example.com:0",
        "example.com:65536",
        "example.com:https",
        "example.com:+80",
        "::1",
        "[::1",
        "[notanip]:80",
        "[fe80::1%eth0]:80",
        "127.1",
        "0x7f.0.0.1",
        "ex\u00e4mple.com",
        "a" * 64 + ".example",
        "user@example.com",
    ],
)
def test_parse_allow_host_rejects_junk(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_allow_host(text)
    assert "\n" not in info.value.message and "--allow-host" in info.value.message


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (embedded in IPv6)"),
        ("240.0.0.1", "private"),
        ("4000::1", "reserved"),
        ("fec0::1", "site-local"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_addresses(address: str, why: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == why


# -- servers the proxy reaches -----------------------------------------------------------------


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@dataclass
class Upstream:
    """A loopback server that records every connection's bytes and echoes or answers HTTP."""

    http: bool = False
    answer: bytes = OK
    connections: int = 0
    ended: int = 0
    received: list[bytes] = field(default_factory=list)
    port: int = 0
    server: Any = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        got = bytearray()
        self.received.append(b"")
        index = len(self.received) - 1
        try:
            if self.http:
                # Answer once the head is in and the body (Content-Length or chunked) is read,
                # then keep reading until the proxy closes: anything smuggled after shows up.
                while b"\r\n\r\n" not in got:
                    got += await reader.read(65536)
                    self.received[index] = bytes(got)
                writer.write(self.answer)
                await writer.drain()
                writer.write_eof()
            while data := await reader.read(65536):
                got += data
                self.received[index] = bytes(got)
                if not self.http:
                    writer.write(data)
                    await writer.drain()
            if not self.http:
                writer.write_eof()
        except (OSError, asyncio.CancelledError):
            # A handler the closing server cancels ends quietly: Python 3.11's stream callback logs a cancelled
            # handler task as an error (seen under load, in a test that leaves its answer unread).
            pass
        finally:
            writer.close()
            self.ended += 1

    async def all_received(self, count: int = 1) -> list[bytes]:
        """What the first `count` connections sent, once the proxy has closed them (polled with a deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while self.ended < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.received


@asynccontextmanager
async def upstream(*, http: bool = False, answer: bytes = OK) -> AsyncIterator[Upstream]:
    up = Upstream(http=http, answer=answer)
    up.server = await asyncio.start_server(up._handle, "127.0.0.1", 0)
    up.port = up.server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        up.server.close()


def fixed_resolver(table: dict[str, list[str]], asked: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"no such name {host}")
        return table[host]

    return resolve


@asynccontextmanager
async def proxy(net_dir: Path, rules: list[str], resolver: Any = None, **kwargs: Any) -> AsyncIterator[EgressProxy]:
    p = EgressProxy(
        socket_path=net_dir / "egress.sock",
        rules=[parse_allow_host(r) for r in rules],
        log_path=net_dir / "egress.jsonl",
        resolver=resolver,
        **kwargs,
    )
    await p.start()
    try:
        yield p
    finally:
        await p.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def open_proxy(p: EgressProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_unix_connection(str(p.socket_path)), DEADLINE)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)).decode()
    status_line, *lines = head[:-4].split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split(" ")[1]), headers


async def ask(p: EgressProxy, request: bytes) -> Answer:
    """Send one request and read the proxy's whole answer (it closes after a refusal)."""
    reader, writer = await open_proxy(p)
    writer.write(request)
    status, headers = await read_head(reader)
    body = await asyncio.wait_for(reader.read(), DEADLINE)
    writer.close()
    return Answer(status, headers, body)


def log_lines(net_dir: Path) -> list[dict[str, Any]]:
    path = net_dir / "egress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for_log(net_dir: Path, count: int) -> list[dict[str, Any]]:
    # The line of a connection is written when the proxy has closed it: poll with a deadline.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while len(lines := log_lines(net_dir)) < count and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return lines


# -- allowed ------------------------------------------------------------------------------------


def test_connect_to_a_listed_ip_port_is_tunnelled_and_logged(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head == b"HTTP/1.1 200 Connection established\r\nX-Harness-Egress: allowed\r\n\r\n"
            writer.write(b"ping ")
            assert await asyncio.wait_for(reader.readexactly(5), DEADLINE) == b"ping "  # a read of its own
            writer.write(b"through the tunnel")
            writer.write_eof()  # half-close: the echo still comes back
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"through the tunnel"
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
            assert up.received == [b"ping through the tunnel"]
            assert line["decision"] == "allowed" and line["method"] == "CONNECT" and line["reason"] == ""
            assert (line["host"], line["port"], line["ip"]) == ("127.0.0.1", up.port, "127.0.0.1")
            assert (line["bytes_up"], line["bytes_down"]) == (23, 23)
            assert line["ts"].endswith("+00:00") and isinstance(line["duration_s"], float)
            assert 0 <= line["duration_s"] < DEADLINE and round(line["duration_s"], 3) == line["duration_s"]

    asyncio.run(scenario())


def test_a_name_resolving_to_a_listed_ip_literal_is_allowed(net_dir: Path) -> None:
    # The positive control of the resolution check: loopback is fine when that IP itself is listed.
    async def scenario() -> None:
        async with (
            upstream() as up,
            proxy(
                net_dir,
                [f"example.test:{up.port}", f"127.0.0.1:{up.port}"],
                fixed_resolver({"example.test": ["127.0.0.1"]}),
            ) as p,
        ):
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT EXAMPLE.test.:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            writer.write(b"x")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"x"
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
            assert (line["decision"], line["host"], line["ip"]) == ("allowed", "example.test", "127.0.0.1")

    asyncio.run(scenario())


def test_absolute_form_is_forwarded_once_with_connection_close(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            answer = await ask(
                p,
                f"POST http://127.0.0.1:{up.port}/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n"
                "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
                "Content-Length: 5\r\n\r\nhello"
                # A second request after the body must never reach the host.
                "GET http://127.0.0.1/smuggled HTTP/1.1\r\n\r\n".encode(),
            )
            assert (answer.status, answer.body) == (200, b"ok")
            await wait_for_log(net_dir, 1)
            [got] = up.received
            head, _, body = got.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            assert lines[0] == "POST /path?q=1 HTTP/1.1"
            assert f"Host: 127.0.0.1:{up.port}" in lines and "Connection: close" in lines
            assert not any(ln.lower().startswith(("proxy-", "x-drop", "connection: keep")) for ln in lines)
            assert body == b"hello"

    asyncio.run(scenario())


def test_chunked_body_is_forwarded_to_its_last_chunk(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            answer = await ask(
                p,
                f"POST http://127.0.0.1:{up.port}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".encode(),
            )
            assert answer.status == 200
            await wait_for_log(net_dir, 1)
            [got] = up.received
            assert got.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n") and b"smuggled" not in got
            assert f"Host: 127.0.0.1:{up.port}".encode() in got  # added when the client sent none

    asyncio.run(scenario())


# -- refused ------------------------------------------------------------------------------------


@dataclass
class Refusal:
    rules: list[str]
    request: str
    reason: str
    host: str
    resolve: dict[str, list[str]] = field(default_factory=dict)
    ip: str | None = None  # the forbidden address a name resolved to, in the log


REFUSALS = {
    "unlisted port": Refusal(
        ["127.0.0.1:1"],
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n",
        "port {port} is not allowed",
        "127.0.0.1",
    ),
    "name resolving to loopback": Refusal(
        ["example.test:{port}"],
        "CONNECT example.test:{port} HTTP/1.1\r\n\r\n",
        "example.test resolves to 127.0.0.1, a loopback address",
        "example.test",
        {"example.test": ["93.184.216.34", "127.0.0.1"]},
        "127.0.0.1",
    ),
    "unlisted IP": Refusal(
        ["example.test:{port}", "127.0.0.2:{port}"],
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n",
        "127.0.0.1 is not in the allowlist",
        "127.0.0.1",
    ),
    "Host header naming another host": Refusal(
        ["127.0.0.1:{port}"],
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: internal.test\r\n\r\n",
        "the Host header names internal.test",
        "127.0.0.1",
    ),
    "Host header naming another port": Refusal(
        ["127.0.0.1:{port}"],
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        "the Host header names 127.0.0.1:1",
        "127.0.0.1",
    ),
    "suffix trick before": Refusal(
        ["example.test:{port}"],
        "CONNECT evil-example.test:{port} HTTP/1.1\r\n\r\n",
        "evil-example.test is not in the allowlist",
        "evil-example.test",
        {"evil-example.test": ["127.0.0.1"], "example.test": ["127.0.0.1"]},
    ),
    "suffix trick after": Refusal(
        ["example.test:{port}"],
        "GET http://example.test.evil.test:{port}/ HTTP/1.1\r\n\r\n",
        "example.test.evil.test is not in the allowlist",
        "example.test.evil.test",
        {"example.test.evil.test": ["127.0.0.1"], "example.test": ["127.0.0.1"]},
    ),
    "metadata address via a name": Refusal(
        ["meta.test:{port}"],
        "CONNECT meta.test:{port} HTTP/1.1\r\n\r\n",
        "meta.test resolves to 169.254.169.254, a cloud metadata address",
        "meta.test",
        {"meta.test": ["169.254.169.254"]},
        "169.254.169.254",
    ),
    "private address via a name, absolute-form": Refusal(
        ["lan.test:{port}"],
        "GET http://lan.test:{port}/ HTTP/1.1\r\nHost: lan.test:{port}\r\n\r\n",
        "lan.test resolves to 192.168.1.10, a private address",
        "lan.test",
        {"lan.test": ["192.168.1.10"]},
        "192.168.1.10",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_with_a_structured_denial_and_logged(net_dir: Path, case: Refusal) -> None:
    async def scenario() -> None:
        async with upstream() as up:
            fill = {"port": up.port}
            asked: list[str] = []
            resolver = fixed_resolver(case.resolve, asked)
            async with proxy(net_dir, [r.format(**fill) for r in case.rules], resolver) as p:
                answer = await ask(p, case.request.format(**fill).encode())
                lines = await wait_for_log(net_dir, 1)
            reason = case.reason.format(**fill)
            assert answer.status == 403 and answer.headers["x-harness-egress"] == "refused"
            assert answer.headers["content-type"] == "application/json"
            body = answer.json()
            assert (body["error"], body["host"], body["port"]) == ("egress-refused", case.host, up.port)
            assert body["reason"].startswith(reason)
            [line] = lines
            assert (line["decision"], line["status"], line["host"], line["port"]) == (
                "refused",
                403,
                case.host,
                up.port,
            )
            assert line["reason"].startswith(reason) and line["ip"] == case.ip
            assert up.connections == 0  # nothing reached the server the agent aimed at
            # A name that is not listed is never even looked up.
            assert all(h in {r.split(":")[0] for r in case.rules} for h in asked)

    asyncio.run(scenario())


def test_a_listed_name_that_resolves_to_a_listed_ip_on_another_port_is_still_refused(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up:
            rules = [f"example.test:{up.port}", "127.0.0.1:1"]
            async with proxy(net_dir, rules, fixed_resolver({"example.test": ["127.0.0.1"]})) as p:
                answer = await ask(p, f"CONNECT example.test:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert answer.status == 403 and "loopback" in answer.json()["reason"]
            assert up.connections == 0

    asyncio.run(scenario())


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"garbage\r\n\r\n", 400, "malformed request head: illegal request line"),
        (b"GET /local HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request target: not a proxy request"),
        (b"GET https://example.test/ HTTP/1.1\r\n\r\n", 400, "bad request target: https goes through CONNECT"),
        (b"CONNECT example.test HTTP/1.1\r\n\r\n", 400, "bad request target: a port is required"),
        (b"CONNECT 127.1:80 HTTP/1.1\r\n\r\n", 400, "bad request target: a numeric name"),
        (b"GET http://user@example.test/ HTTP/1.1\r\n\r\n", 400, "bad request target: user info"),
        (b"CONNECT \xff:1 HTTP/1.1\r\n\r\n", 400, "non-ASCII"),
        (b"CONNECT a.test:1 HTTP/1.1\r\n folded\r\n\r\n", 400, "an obsolete folded header line"),
        (b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n", 400, "more than one Host"),
        (b"GET http://a.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both"),
        (b"GET http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "Only Transfer-Encoding: chunked"),
        (b"GET http://a.test/ HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431, "request head over"),
    ],
)
def test_malformed_requests_get_a_4xx_and_the_proxy_keeps_serving(
    net_dir: Path, request_bytes: bytes, status: int, reason: str
) -> None:
    async def scenario() -> None:
        async with upstream() as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            answer = await ask(p, request_bytes)
            assert answer.status == status and answer.headers["x-harness-egress"] == "refused"
            assert answer.json()["error"] == "egress-bad-request" and reason in answer.json()["reason"]
            # The next request on a new connection is served.
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            writer.close()
            lines = await wait_for_log(net_dir, 2)
            assert [(ln["decision"], ln["status"]) for ln in lines] == [("refused", status), ("allowed", 200)]
            assert reason in lines[0]["reason"]

    asyncio.run(scenario())


def test_connections_beyond_the_limit_get_503(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up, proxy(net_dir, [f"127.0.0.1:{up.port}"], max_connections=2) as p:
            held = []
            for _ in range(2):
                reader, writer = await open_proxy(p)
                writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
                assert (await read_head(reader))[0] == 200
                held.append(writer)
            answer = await ask(p, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert answer.status == 503 and answer.json()["error"] == "egress-failed"
            assert answer.json()["reason"] == "more than 2 connections at once"
            held.pop().close()
            lines = await wait_for_log(net_dir, 2)  # the 503, then the closed tunnel
            assert [ln["status"] for ln in lines] == [503, 200]
            # A slot is free again.
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            writer.close()
            held[0].close()

    asyncio.run(scenario())


def test_an_idle_tunnel_is_closed(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up, proxy(net_dir, [f"127.0.0.1:{up.port}"], idle_timeout=0.2) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""  # closed by the proxy
            [line] = await wait_for_log(net_dir, 1)
            assert line["reason"] == "closed after 0.2s idle"
            writer.close()

    asyncio.run(scenario())


def test_the_log_is_capped(net_dir: Path) -> None:
    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:1"], log_cap_bytes=600) as p:
            for _ in range(6):
                assert (await ask(p, b"CONNECT 127.0.0.1:2 HTTP/1.1\r\n\r\n")).status == 403
        lines = log_lines(net_dir)
        assert 1 < len(lines) < 6 and {**lines[-1], "ts": ""} == {
            "ts": "",
            "decision": "log-capped",
            "reason": "later connections are not logged",
        }
        assert lines[-1]["ts"].endswith("+00:00")
        assert all(ln["decision"] == "refused" for ln in lines[:-1])
        assert (net_dir / "egress.jsonl").stat().st_mode & 0o777 == 0o600

    asyncio.run(scenario())


# -- the server thread --------------------------------------------------------------------------


def test_server_thread_serves_the_proxy_and_stops_it(net_dir: Path) -> None:
    import socket

    servers = ServerThread()
    servers.start()
    p = EgressProxy(socket_path=net_dir / "egress.sock", rules=[], log_path=net_dir / "egress.jsonl")
    servers.serve(p)
    assert (net_dir / "egress.sock").stat().st_mode & 0o777 == 0o666

    async def answer() -> int:
        return (await ask(p, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")).status

    assert servers.call(answer()) == 403
    with socket.socket(socket.AF_UNIX) as client:  # a plain blocking client from this thread
        client.connect(str(net_dir / "egress.sock"))
        client.sendall(b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n")
        assert client.recv(100).startswith(b"HTTP/1.1 403 ")
    with pytest.raises(TimeoutError):
        servers.call(asyncio.sleep(5), timeout=0.05)
    servers.stop()
    assert not (net_dir / "egress.sock").exists()
    with pytest.raises(RuntimeError):
        servers.call(asyncio.sleep(0))
    servers.stop()  # twice is fine


def test_a_socket_path_longer_than_sun_path_is_bound(net_dir: Path) -> None:
    deep = net_dir / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "egress.sock")) > 108

    async def scenario() -> None:
        async with upstream() as up:
            p = EgressProxy(
                socket_path=deep / "egress.sock", rules=[AllowRule("127.0.0.1", up.port)], log_path=net_dir / "l"
            )
            await p.start()
            try:
                assert (deep / "egress.sock").stat().st_mode & 0o777 == 0o666
                dir_fd = os.open(deep, os.O_PATH)
                try:  # a client reaches it the same way
                    reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{dir_fd}/egress.sock")
                finally:
                    os.close(dir_fd)
                writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
                assert (await read_head(reader))[0] == 200
                writer.close()
            finally:
                await p.close()
            assert not (deep / "egress.sock").exists()

    asyncio.run(scenario())


def test_a_log_path_that_is_a_symlink_is_refused(net_dir: Path) -> None:
    (net_dir / "elsewhere").write_text("")
    (net_dir / "egress.jsonl").symlink_to(net_dir / "elsewhere")
    p = EgressProxy(socket_path=net_dir / "egress.sock", rules=[], log_path=net_dir / "egress.jsonl")
    with pytest.raises(JournalError) as info:
        asyncio.run(p.start())
    assert (
        info.value.message
        == f"cannot open the egress log {net_dir / 'egress.jsonl'}: Too many levels of symbolic links"
    )
    assert not (net_dir / "egress.sock").exists()


def test_an_empty_connection_is_not_logged_and_an_open_tunnel_is_logged_at_close(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up:
            async with proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
                _reader, writer = await open_proxy(p)
                writer.close()  # nothing asked
                reader, writer = await open_proxy(p)
                writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
                assert (await read_head(reader))[0] == 200
            # close() ended the tunnel and wrote its line.
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            writer.close()
        lines = log_lines(net_dir)
        assert [(ln["decision"], ln["status"], ln["reason"]) for ln in lines] == [("allowed", 200, "proxy closed")]

    asyncio.run(scenario())


# -- request smuggling: control characters and framing (issue 16) ------------------------------
#
# Each attack is sent to a listed loopback upstream that records every byte it gets; a refused one
# must reach nothing there (not even a connection), and its positive control (the same request
# without the attack) must arrive, written anew by the proxy, byte for byte as asserted.

GET = "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
CHUNKED = "POST http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_UP = (
    "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    "5\r\nhello\r\n0\r\n\r\n"
)


@dataclass
class Place:
    request: str  # `{c}` is where the control character goes
    upstream_gets: str  # what the upstream receives for the request without it
    where: str  # how the refusal names the place


PLACES = {
    "request target": Place(
        "GET http://127.0.0.1:{port}/a{c}b?q HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        "GET /ab?q HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
        "in the request line",
    ),
    "method": Place(
        "G{c}ET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
        "in the request line",
    ),
    "header value": Place(
        GET + "X-Note: a{c}b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Note: ab\r\nConnection: close\r\n\r\n",
        "in the header line",
    ),
    "header name": Place(
        GET + "X-No{c}te: ab\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Note: ab\r\nConnection: close\r\n\r\n",
        "in the header line",
    ),
    "Host value": Place(
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1{c}:{port}\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
        "in the header line",
    ),
    "chunk size": Place(CHUNKED + "5{c}\r\nhello\r\n0\r\n\r\n", CHUNKED_UP, "in a chunk line"),
    "chunk extension": Place(CHUNKED + "5;name=a{c}b\r\nhello\r\n0\r\n\r\n", CHUNKED_UP, "in a chunk line"),
    "last chunk": Place(CHUNKED + "5\r\nhello\r\n0;a{c}\r\n\r\n", CHUNKED_UP, "in a chunk line"),
    # Trailers are not forwarded: the control arrives without its trailer.
    "trailer": Place(CHUNKED + "5\r\nhello\r\n0\r\nX-Sum: a{c}b\r\n\r\n", CHUNKED_UP, "in a trailer"),
}
CONTROLS = {"CR": "\r", "LF": "\n", "NUL": "\x00", "DEL": "\x7f", "ESC": "\x1b"}


async def refused_and_unseen(net_dir: Path, request: str, status: int = 400) -> dict[str, Any]:
    """Send `request` ({port} filled in) and return the refusal's log line, having checked that the
    answer is the structured refusal and that the upstream got nothing at all."""
    net_dir = Path(tempfile.mkdtemp(dir=net_dir))  # a log of its own for each call
    async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
        answer = await ask(p, request.replace("{port}", str(up.port)).encode("latin-1"))
        [line] = await wait_for_log(net_dir, 1)
        assert (answer.status, answer.headers["x-harness-egress"]) == (status, "refused")
        error = {400: "egress-bad-request", 403: "egress-refused"}[status]
        assert answer.json()["error"] == error and answer.json()["reason"] == line["reason"]
        assert (line["decision"], line["status"], line["bytes_up"]) == ("refused", status, 0)
        assert (up.connections, up.received) == (0, [])
    return line


async def forwarded(net_dir: Path, request: str) -> tuple[Answer, bytes]:
    """Send `request` and return the agent's answer and the bytes the upstream got ({port} filled in)."""
    net_dir = Path(tempfile.mkdtemp(dir=net_dir))  # a log of its own for each call
    async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
        answer = await ask(p, request.replace("{port}", str(up.port)).encode("latin-1"))
        [got] = await up.all_received()
        [line] = await wait_for_log(net_dir, 1)
    assert (line["decision"], line["status"], line["bytes_up"]) == ("allowed", 200, len(got))
    return answer, got.replace(str(up.port).encode(), b"{port}")


@pytest.mark.parametrize("char", CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
def test_a_control_character_anywhere_in_a_request_is_refused_and_reaches_nothing(
    net_dir: Path, place: Place, char: str
) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, place.request.replace("{c}", char)))
    assert line["reason"].startswith(f"a control character {ord(char):#04x} {place.where} ")


@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
def test_the_same_request_without_the_control_character_is_forwarded(net_dir: Path, place: Place) -> None:
    answer, got = asyncio.run(forwarded(net_dir, place.request.replace("{c}", "")))
    assert (answer.status, answer.body) == (200, b"ok")
    assert got == place.upstream_gets.encode()


def test_a_non_ascii_byte_in_a_chunk_line_is_refused(net_dir: Path) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, CHUNKED + "5;\xe9\r\nhello\r\n0\r\n\r\n"))
    assert line["reason"] == "a non-ASCII byte 0xe9 in a chunk line '5;é'"


def test_a_tab_is_allowed_in_a_header_value_and_a_chunk_line(net_dir: Path) -> None:
    # HTAB is whitespace in both places (RFC 9110 OWS, RFC 9112 BWS), the one control let through.
    answer, got = asyncio.run(forwarded(net_dir, GET.replace("\r\n", "\r\nX-Tab: a\tb\r\n", 1) + "\r\n"))
    assert answer.status == 200 and b"\r\nX-Tab: a\tb\r\n" in got
    answer, got = asyncio.run(forwarded(net_dir, CHUNKED + "5;a\t\r\nhello\r\n0\t\r\n\r\n"))
    assert answer.status == 200 and got == CHUNKED_UP.encode()


FRAMING_ATTACKS = {
    "duplicate Content-Length": (
        "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "more than one Content-Length",
    ),
    "Content-Length list": ("Content-Length: 5, 5\r\n\r\nhello", "more than one Content-Length"),
    "two Content-Lengths": ("Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello", "more than one Content-Length"),
    "Content-Length then Transfer-Encoding": (
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    "Transfer-Encoding then Content-Length": (
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    "Transfer-Encoding gzip": (
        "Transfer-Encoding: gzip\r\n\r\nhello",
        "malformed request head: Only Transfer-Encoding: chunked",
    ),
    "Transfer-Encoding gzip, chunked": (
        "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "malformed request head: Only Transfer-Encoding: chunked",
    ),
    "Transfer-Encoding twice": (
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "more than one Transfer-Encoding",
    ),
    "obs-fold": ("X-Note: a\r\n b\r\n\r\n", "an obsolete folded header line ' b'"),
    "obs-fold with a tab": ("X-Note: a\r\n\tb\r\n\r\n", "an obsolete folded header line '\\tb'"),
    "folded Transfer-Encoding": (
        "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "an obsolete folded header line",
    ),
    "negative Content-Length": ("Content-Length: -5\r\n\r\nhello", "malformed request head: bad Content-Length"),
    "hex Content-Length": ("Content-Length: 0x5\r\n\r\nhello", "malformed request head: bad Content-Length"),
    "space before the colon": ("Content-Length : 5\r\n\r\nhello", "malformed request head: illegal header line"),
    "chunk size not hex": ("Transfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n", "malformed chunk line '5g'"),
    "chunk size of 17 digits": (
        "Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n",
        "malformed chunk line",
    ),
    "negative chunk size": ("Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "malformed chunk line"),
    "chunk longer than its size": ("Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "malformed chunk line"),
    "chunk without its CRLF": (
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
        "malformed request body: malformed chunk footer",
    ),
    "chunk line over 16 KiB": (
        "Transfer-Encoding: chunked\r\n\r\n5;" + "e" * 17000 + "\r\nhello\r\n0\r\n\r\n",
        "a chunk line over 16384 bytes",
    ),
    "more than 100 headers": ("X-A: 1\r\n" * 100 + "\r\n", "more than 100 headers"),
    "two Host headers": ("Host: 127.0.0.1:{port}\r\n\r\n", "more than one Host header"),
}


@pytest.mark.parametrize(("headers", "reason"), FRAMING_ATTACKS.values(), ids=FRAMING_ATTACKS.keys())
def test_ambiguous_framing_is_refused_and_reaches_nothing(net_dir: Path, headers: str, reason: str) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, GET.replace("GET", "POST") + headers))
    assert line["reason"].startswith(reason) and line["method"] in (None, "POST")


def test_the_same_body_framed_one_way_is_forwarded(net_dir: Path) -> None:
    # The controls of the framing attacks: one Content-Length, or chunked alone.
    post = GET.replace("GET", "POST")
    answer, got = asyncio.run(forwarded(net_dir, post + "Content-Length: 5\r\n\r\nhello"))
    assert answer.status == 200
    assert got == b"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    answer, got = asyncio.run(forwarded(net_dir, post + "transfer-encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    assert answer.status == 200 and got == CHUNKED_UP.replace("GET", "POST").encode()
    answer, got = asyncio.run(forwarded(net_dir, post + "X-Note: a b\r\n\r\n"))  # unfolded
    assert answer.status == 200
    assert got == b"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Note: a b\r\nConnection: close\r\n\r\n"


def test_chunks_are_written_anew_extensions_dropped_and_nothing_after_the_last_reaches_the_host(
    net_dir: Path,
) -> None:
    answer, got = asyncio.run(
        forwarded(
            net_dir,
            CHUNKED + "3;a=b\r\nhel\r\n02 \r\nlo\r\n0;last\r\nX-Trailer: t\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        )
    )
    assert answer.status == 200
    assert got == CHUNKED_UP.replace("5\r\nhello", "3\r\nhel\r\n2\r\nlo").encode()


def test_a_listed_connection_header_never_removes_the_framing(net_dir: Path) -> None:
    answer, got = asyncio.run(
        forwarded(
            net_dir,
            GET.replace("GET", "POST") + "Connection: content-length, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n"
            "Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nContent-Length: 5\r\n\r\nhello",
        )
    )
    assert answer.status == 200
    assert got == (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Keep: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )


def test_the_host_header_is_written_from_the_target(net_dir: Path) -> None:
    # The agent's Host (checked to name the same place) never reaches the upstream as it was sent.
    answer, got = asyncio.run(
        forwarded(net_dir, "GET http://127.0.0.1:{port}/x HTTP/1.1\r\nX-A: 1\r\nhOsT: 127.0.0.1:{port}\r\n\r\n")
    )
    assert answer.status == 200
    assert got == b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: 1\r\nConnection: close\r\n\r\n"


def test_an_http_1_0_request_without_host_is_forwarded_as_http_1_1(net_dir: Path) -> None:
    answer, got = asyncio.run(forwarded(net_dir, "GET http://127.0.0.1:{port} HTTP/1.0\r\n\r\n"))
    assert answer.status == 200
    assert got == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ("GET http://127.0.0.1:{port}/ HTTP/2.0\r\nHost: 127.0.0.1:{port}\r\n\r\n", "unsupported HTTP version 2.0"),
        ("GET http://127.0.0.1:{port}/ HTTP/0.9\r\nHost: 127.0.0.1:{port}\r\n\r\n", "unsupported HTTP version 0.9"),
        ("GET http://127.0.0.1:{port}/  HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", "malformed request head"),
        ("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "a CONNECT request with a body"),
        ("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "a CONNECT request"),
        ("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}:1\r\n\r\n", "bad Host header"),
    ],
)
def test_other_malformed_heads_are_refused_and_reach_nothing(net_dir: Path, request_text: str, reason: str) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, request_text))
    assert line["reason"].startswith(reason)


def test_connect_with_an_empty_body_is_tunnelled(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nContent-Length: 0\r\n\r\nbytes".encode())
            assert (await read_head(reader))[0] == 200
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"bytes"  # sent early, tunnelled
            writer.close()

    asyncio.run(scenario())


# -- bodies: held, streamed, cut short ----------------------------------------------------------


def test_a_body_larger_than_the_hold_is_streamed_whole(net_dir: Path) -> None:
    body = bytes(b for b in range(256) if not 0x30 <= b <= 0x39) * 1000  # 246,000 bytes, no digit
    head = GET.replace("GET", "PUT") + f"Content-Length: {len(body)}\r\n\r\n"
    answer, got = asyncio.run(forwarded(net_dir, head + body.decode("latin-1")))
    assert answer.status == 200
    up_head = b"PUT / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 246000\r\nConnection: close\r\n\r\n"
    assert got == up_head + body


def test_a_bad_chunk_after_the_hold_ends_both_connections_and_nothing_follows(net_dir: Path) -> None:
    big = "x" * 70000

    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            request = CHUNKED.format(port=up.port) + f"{len(big):x}\r\n{big}\r\n5\rX\r\nhello\r\n0\r\n\r\n"
            answer = await ask(p, request.encode())
            [got] = await up.all_received()
            [line] = await wait_for_log(net_dir, 1)
        assert answer.status == 400 and "a control character 0x0d in a chunk line" in answer.json()["reason"]
        assert (line["decision"], line["status"], line["ip"]) == ("refused", 400, "127.0.0.1")
        head = CHUNKED_UP.format(port=up.port).split("\r\n\r\n")[0].encode() + b"\r\n\r\n"
        assert got.startswith(head) and line["bytes_up"] == len(got)
        # h11 wrote the big chunk anew as it came; it was cut short: no last chunk, nothing after.
        data, ended = dechunk(got[len(head) :])
        assert not ended and len(got) >= BODY_HOLD and big.encode().startswith(data)

    asyncio.run(scenario())


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body and whether its last chunk came."""
    data = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data, rest == b"\r\n"
        data, body = data + rest[:size], rest[size + 2 :]
    return data, False


def test_an_agent_that_stops_mid_body_is_logged(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            reader, writer = await open_proxy(p)
            writer.write((GET.replace("GET", "POST") + "Content-Length: 10\r\n\r\nhel").format(port=up.port).encode())
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        # Nothing was forwarded (the body is held until it is whole or BODY_HOLD long).
        assert (line["decision"], line["status"], line["reason"]) == (
            "refused",
            None,
            "connection lost: IncompleteReadError",
        )
        assert up.connections == 0

    asyncio.run(scenario())


def test_an_idle_body_is_closed(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"], idle_timeout=0.2) as p:
            reader, writer = await open_proxy(p)
            writer.write((GET.replace("GET", "POST") + "Content-Length: 10\r\n\r\nhel").format(port=up.port).encode())
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        assert line["reason"] == "closed after 0.2s idle" and up.connections == 0

    asyncio.run(scenario())


def test_expect_100_continue_is_answered_by_the_proxy(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            reader, writer = await open_proxy(p)
            head = GET.replace("GET", "POST") + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
            writer.write(head.format(port=up.port).encode())
            assert await read_head(reader) == (100, {})  # before the body: the agent may send it now
            assert up.connections == 0
            writer.write(b"hello")
            status, _headers = await read_head(reader)
            assert (status, await asyncio.wait_for(reader.read(), DEADLINE)) == (200, b"ok")
            writer.close()
            [got] = await up.all_received()
        assert (
            got
            == (
                f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            ).encode()
        )

    asyncio.run(scenario())


# -- the upstream's answer, written anew ----------------------------------------------------------


async def raw_answer(net_dir: Path, answer: bytes, request: str = GET + "\r\n") -> tuple[bytes, dict[str, Any]]:
    """Every byte the agent gets when the upstream answers `answer`, and the log line."""
    async with upstream(http=True, answer=answer) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
        reader, writer = await open_proxy(p)
        writer.write(request.format(port=up.port).encode())
        got = await asyncio.wait_for(reader.read(), DEADLINE)
        writer.close()
        [line] = await wait_for_log(net_dir, 1)
    return got, line


@pytest.mark.parametrize(
    ("answer", "agent_gets", "request_text"),
    [
        pytest.param(
            b"HTTP/1.1 201 Made\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\nConnection: X-Up, keep-alive\r\n"
            b"X-Up: 1\r\nX-Kept: caf\xe9\r\nUpgrade: h2\r\n\r\n5;ext\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\nleft over",
            b"HTTP/1.1 201 Made\r\nX-Kept: caf\xe9\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            GET + "\r\n",
            id="chunked, hop-by-hop headers removed, obs-text kept, trailers and extensions dropped",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            GET + "\r\n",
            id="1xx answers are not relayed",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"d\r\nuntil the end\r\n0\r\n\r\n",
            GET + "\r\n",
            id="read until closed, chunked for an HTTP/1.1 agent",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            "GET http://127.0.0.1:{port}/ HTTP/1.0\r\n\r\n",
            id="read until closed, as is for an HTTP/1.0 agent",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            GET.replace("GET", "HEAD") + "\r\n",
            id="HEAD: the length without a body",
        ),
    ],
)
def test_the_answer_is_written_anew_for_the_agent(
    net_dir: Path, answer: bytes, agent_gets: bytes, request_text: str
) -> None:
    got, line = asyncio.run(raw_answer(net_dir, answer, request_text))
    assert got == agent_gets
    assert (line["decision"], line["status"], line["bytes_down"], line["reason"]) == (
        "allowed",
        int(agent_gets[9:12]),
        len(agent_gets),
        "",
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"garbage\r\n\r\n", "the upstream's answer is malformed: illegal status line"),
        (b"", "the upstream closed the connection without an answer"),
        (b"HTTP/1.1 200 OK\r\n", "the upstream closed the connection without an answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "the upstream's answer is malformed: Only"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200000 + b"\r\n\r\n", "the upstream's answer is malformed: Receive buffer"),
    ],
)
def test_a_malformed_answer_is_a_502(net_dir: Path, answer: bytes, reason: str) -> None:
    got, line = asyncio.run(raw_answer(net_dir, answer))
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"X-Harness-Egress: failed" in head
    assert json.loads(body)["error"] == "egress-failed" and json.loads(body)["reason"].startswith(reason)
    assert (line["decision"], line["status"], line["ip"]) == ("refused", 502, "127.0.0.1")
    assert line["reason"].startswith(reason) and line["bytes_up"] > 0


def test_an_answer_that_breaks_off_ends_the_connection_and_is_logged(net_dir: Path) -> None:
    got, line = asyncio.run(raw_answer(net_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
    assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    assert (line["decision"], line["status"], line["bytes_down"]) == ("allowed", 200, len(got))
    assert line["reason"].startswith("the upstream's answer broke off: peer closed connection")


# -- the rest of the policy, edge by edge -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[::1", "a bracketed host must be an IPv6 address"),
        ("[notanip]:80", "[notanip] is not an IPv6 address"),
        ("[::1]x", "junk after the IPv6 address"),
        ("::1", "an IPv6 address needs brackets: [ADDRESS]:PORT"),
        ("a:b:c", "an IPv6 address needs brackets: [ADDRESS]:PORT"),
        ("*.example.com", "not a host name (letters, digits, '-', dots; no wildcards)"),
        ("\u212aelvin.example", "not a host name"),  # the Kelvin sign lowercases to an ASCII 'k'
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, "not a host name"),  # 254 bytes
        ("example.0x10", "a numeric name that is not a plain IPv4 address"),
        ("example.com:000080", "bad port '000080' (1-65535)"),
        ("example.com:", "bad port '' (1-65535)"),
    ],
)
def test_parse_allow_host_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_allow_host(text)
    assert info.value.message.startswith(f"--allow-host {text!r}: {message}")


def test_parse_allow_host_takes_a_253_byte_name_and_five_digit_ports() -> None:
    name = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61
    assert parse_allow_host(f"{name}:00443") == AllowRule(name, 443)


def test_an_allow_rule_prints_as_it_is_written() -> None:
    assert (str(AllowRule("::1", 443)), str(AllowRule("example.com", 80))) == ("[::1]:443", "example.com:80")


def test_the_system_resolver_finds_localhost() -> None:
    found = asyncio.run(system_resolver("localhost", 443))
    assert "127.0.0.1" in found and len(found) == len(set(found))
    assert all(ipaddress.ip_address(address) for address in found)


def test_a_listed_ip_literal_is_never_looked_up_and_connected_to_as_is(net_dir: Path) -> None:
    async def scenario() -> None:
        asked: list[str] = []
        # 127.0.0.2 is loopback too: a connection that went to 'localhost' instead would not reach it.
        up = Upstream()
        server = await asyncio.start_server(up._handle, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(net_dir, [f"127.0.0.2:{port}"], fixed_resolver({}, asked)) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.2:{port} HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200  # a Host without a port names the CONNECT target
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        server.close()
        assert asked == [] and (line["decision"], line["ip"]) == ("allowed", "127.0.0.2")

    asyncio.run(scenario())


def test_a_name_is_looked_up_with_its_port(net_dir: Path) -> None:
    async def scenario() -> None:
        asked: list[tuple[str, int]] = []

        async def resolve(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return ["127.0.0.1", "127.0.0.1"]

        async with upstream() as up, proxy(net_dir, [f"a.test:{up.port}", f"127.0.0.1:{up.port}"], resolve) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT a.test:{up.port} HTTP/1.1\r\nHost: a.test:{up.port}\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            writer.close()
        assert asked == [("a.test", up.port)]

    asyncio.run(scenario())


async def _never(host: str, port: int) -> list[str]:
    await asyncio.Event().wait()
    return []


@pytest.mark.parametrize(
    ("resolver", "status", "reason"),
    [
        (fixed_resolver({}), 502, "cannot resolve a.test: OSError"),
        (_never, 502, "cannot resolve a.test: TimeoutError"),
        (fixed_resolver({"a.test": []}), 502, "a.test has no address"),
        (fixed_resolver({"a.test": ["x" * 80]}), 403, f"a.test resolves to an unreadable address {'x' * 64!r}"),
    ],
)
def test_a_name_that_does_not_resolve_to_an_address_is_refused(
    net_dir: Path, monkeypatch: pytest.MonkeyPatch, resolver: Any, status: int, reason: str
) -> None:
    monkeypatch.setattr(egress, "RESOLVE_TIMEOUT", 0.1)

    async def scenario() -> None:
        async with proxy(net_dir, ["a.test:443"], resolver) as p:
            answer = await ask(p, b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
            [line] = await wait_for_log(net_dir, 1)
        kind = "failed" if status == 502 else "refused"
        assert (answer.status, answer.headers["x-harness-egress"], answer.json()["error"]) == (
            status,
            kind,
            f"egress-{kind}",
        )
        assert answer.json()["reason"] == line["reason"] == reason and line["status"] == status

    asyncio.run(scenario())


def test_a_listed_port_where_nothing_listens_is_a_502(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up:
            port = up.port
        async with proxy(net_dir, [f"127.0.0.1:{port}"]) as p:  # the stand-in is gone: the port is closed
            answer = await ask(p, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            [line] = await wait_for_log(net_dir, 1)
        reason = f"cannot connect to 127.0.0.1:{port}: Connect call failed ('127.0.0.1', {port})"
        assert (answer.status, answer.json()["reason"], answer.json()["error"]) == (502, reason, "egress-failed")
        assert (line["status"], line["reason"], line["ip"]) == (502, reason, "127.0.0.1")

    asyncio.run(scenario())


def test_an_ipv6_literal_is_bracketed_in_the_refusal(net_dir: Path) -> None:
    async def scenario() -> None:
        async with proxy(net_dir, ["[::1]:1"]) as p:
            answer = await ask(p, b"CONNECT [::1]:2 HTTP/1.1\r\n\r\n")
        assert answer.json()["reason"] == "port 2 is not allowed for [::1]"

    asyncio.run(scenario())


def test_a_refusal_is_exactly_this_answer(net_dir: Path) -> None:
    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:1"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(b"CONNECT 127.0.0.1:2 HTTP/1.1\r\n\r\n")
            got = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
        body = (
            b'{"error": "egress-refused", "host": "127.0.0.1", "port": 2, '
            b'"reason": "port 2 is not allowed for 127.0.0.1"}'
        )
        assert got == (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"X-Harness-Egress: refused\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )

    asyncio.run(scenario())


def test_a_head_not_finished_in_time_is_a_408(net_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "HEADER_TIMEOUT", 0.2)

    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:1"]) as p:
            answer = await ask(p, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n")
            [line] = await wait_for_log(net_dir, 1)
        assert (answer.status, answer.json()["error"], answer.headers["x-harness-egress"]) == (
            408,
            "egress-bad-request",
            "refused",
        )
        assert line["reason"] == answer.json()["reason"] == "no complete request head within 0.2s"

    asyncio.run(scenario())


def test_a_head_cut_short_is_a_400(net_dir: Path) -> None:
    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:1"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n")
            writer.write_eof()
            status, _headers = await read_head(reader)
            body = json.loads(await asyncio.wait_for(reader.read(), DEADLINE))
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        assert (status, body["reason"], line["status"]) == (400, "the request head ended early", 400)

    asyncio.run(scenario())


def test_exactly_100_headers_are_forwarded(net_dir: Path) -> None:
    headers = "".join(f"X-{i}: {i}\r\n" for i in range(99))
    answer, got = asyncio.run(forwarded(net_dir, GET + headers + "\r\n"))
    assert answer.status == 200 and got.count(b"\r\nX-") == 99


def test_http_port_80_is_the_default_and_left_out_of_host(net_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> bytes:
        async with upstream(http=True) as up:
            monkeypatch.setattr(egress, "HTTP_PORT", up.port)  # port 80 needs root: the stand-in's port plays it
            async with proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
                answer = await ask(p, b"GET http://127.0.0.1?q HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                [got] = await up.all_received()
        assert answer.status == 200
        return got

    assert asyncio.run(scenario()) == b"GET /?q HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "path"),
    [("/a/b://c", "/a/b://c"), ("?a=1?b/c", "/?a=1?b/c"), ("/x?y=/z", "/x?y=/z")],
)
def test_the_path_is_everything_after_the_authority(net_dir: Path, target: str, path: str) -> None:
    answer, got = asyncio.run(forwarded(net_dir, f"GET http://127.0.0.1:{{port}}{target} HTTP/1.1\r\n\r\n"))
    assert answer.status == 200 and got.startswith(f"GET {path} HTTP/1.1\r\n".encode())


@pytest.mark.parametrize("target", ["/#frag", "/a\\b#", "\\@x/"])
def test_fragments_and_backslashes_in_the_target_are_refused(net_dir: Path, target: str) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, f"GET http://127.0.0.1:{{port}}{target} HTTP/1.1\r\n\r\n"))
    assert line["reason"] == "bad request target: user info, backslashes and fragments are not allowed"


def test_a_long_mismatching_host_is_cut_to_100_characters_in_the_reason(net_dir: Path) -> None:
    host = "a." * 60 + "test"

    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:80"]) as p:
            answer = await ask(p, f"GET http://127.0.0.1/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert answer.json()["reason"] == f"the Host header names {host[:100]}, not the request's target"

    asyncio.run(scenario())


def test_a_long_line_is_cut_to_100_characters_in_the_reason(net_dir: Path) -> None:
    value = "v" * 200
    line = asyncio.run(refused_and_unseen(net_dir, GET + f"X-Long: {value}\x00\r\n\r\n"))
    assert line["reason"] == f"a control character 0x00 in the header line {('X-Long: ' + value)[:100]!r}"


@pytest.mark.parametrize(("byte", "kind"), [("\x80", "a non-ASCII byte 0x80"), ("\x7f", "a control character 0x7f")])
def test_bytes_at_the_edge_of_ascii_are_named(net_dir: Path, byte: str, kind: str) -> None:
    line = asyncio.run(refused_and_unseen(net_dir, GET + f"X: {byte}\r\n\r\n"))
    assert line["reason"].startswith(f"{kind} in the header line")


def test_an_answer_head_up_to_64_kib_is_relayed(net_dir: Path) -> None:
    cookie = b"c" * 40000  # over h11's default 16 KiB, under the proxy's 64 KiB
    got, line = asyncio.run(raw_answer(net_dir, b"HTTP/1.1 200 OK\r\nSet-Cookie: " + cookie + b"\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\nSet-Cookie: " + cookie + b"\r\n") and line["status"] == 200


def test_expect_100_continue_is_counted_in_the_bytes_down(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            reader, writer = await open_proxy(p)
            head = GET.replace("GET", "POST") + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            writer.write(head.format(port=up.port).encode())
            await read_head(reader)
            writer.write(b"hi")
            got = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        assert line["bytes_down"] == len(b"HTTP/1.1 100 \r\n\r\n") + len(got)

    asyncio.run(scenario())


def test_an_agent_that_does_not_read_the_answer_is_let_go_after_the_idle_timeout(net_dir: Path) -> None:
    async def scenario() -> None:
        big = b"HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n" + b"z" * 20_000_000
        async with (
            upstream(http=True, answer=big) as up,
            proxy(net_dir, [f"127.0.0.1:{up.port}"], idle_timeout=0.3) as p,
        ):
            _reader, writer = await open_proxy(p)
            writer.write((GET + "\r\n").format(port=up.port).encode())
            [line] = await wait_for_log(net_dir, 1)  # the agent never reads: the proxy must not wait forever
            writer.close()
        assert line["reason"] == "connection lost: TimeoutError" and 0 < line["bytes_down"] < len(big)

    asyncio.run(scenario())


def test_an_upstream_that_resets_ends_the_tunnel_at_once(net_dir: Path) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # an RST, not a FIN

    async def scenario() -> None:
        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(net_dir, [f"127.0.0.1:{port}"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            writer.write(b"x")  # the agent keeps its side open
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            [line] = await wait_for_log(net_dir, 1)
            writer.close()
        server.close()
        assert line["reason"] == "connection lost: ConnectionResetError"

    asyncio.run(scenario())


def test_a_download_is_not_idle_while_the_agent_only_listens(net_dir: Path) -> None:
    early_eof: list[bool] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(8):  # 0.8 s of data, 0.1 s apart, through a tunnel idle after 0.3 s
            writer.write(b"d" * 1000)
            await writer.drain()
            await asyncio.sleep(0.1)
        early_eof.append(reader.at_eof())  # the agent's side was not given up meanwhile
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(net_dir, [f"127.0.0.1:{port}"], idle_timeout=0.3) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"d" * 8000
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
        server.close()
        assert (line["bytes_down"], line["reason"], early_eof) == (8000, "", [False])

    asyncio.run(scenario())


def test_a_log_that_cannot_be_written_does_not_break_the_request(
    net_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        p = EgressProxy(socket_path=net_dir / "egress.sock", rules=[], log_path=Path("/dev/full"))
        await p.start()
        try:
            assert (await ask(p, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")).status == 403
        finally:
            await p.close()

    with caplog.at_level(logging.WARNING, logger="runner.gateway.egress"):
        asyncio.run(scenario())
    assert caplog.messages == ["egress log /dev/full: [Errno 28] No space left on device"]


def test_close_is_safe_before_start_twice_and_without_its_socket(net_dir: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        p = EgressProxy(socket_path=net_dir / "egress.sock", rules=[], log_path=net_dir / "egress.jsonl")
        await p.close()  # never started
        await p.start()
        (net_dir / "egress.sock").unlink()  # someone removed it
        await p.close()
        await p.close()

    asyncio.run(scenario())
    assert len(os.listdir("/proc/self/fd")) == fds  # the log's descriptor is closed


def test_a_socket_that_cannot_be_bound_leaves_no_open_log(net_dir: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    p = EgressProxy(socket_path=net_dir / "missing" / "egress.sock", rules=[], log_path=net_dir / "egress.jsonl")
    with pytest.raises(FileNotFoundError):
        asyncio.run(p.start())
    asyncio.run(p.close())
    assert len(os.listdir("/proc/self/fd")) == fds


# -- the chunk-line checker on its own: lines split across reads --------------------------------


def test_chunk_lines_are_followed_across_any_split() -> None:
    body = b"5;ext\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    for size in (1, 2, 3, 7, len(body)):
        lines = _ChunkLines()
        for at in range(0, len(body), size):
            assert not lines.done
            lines.feed(body[at : at + size])
        assert lines.done
        lines.feed(b"\x00 after the end is not looked at")


@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_control_character_split_from_its_line_is_still_found(size: int) -> None:
    body = b"5\r\nhello\r\n3;a\rb\r\nabc\r\n0\r\n\r\n"
    lines = _ChunkLines()

    def feed_all() -> None:
        for at in range(0, len(body), size):
            lines.feed(body[at : at + size])

    with pytest.raises(egress._Denied) as info:
        feed_all()
    assert info.value.reason == "a control character 0x0d in a chunk line '3;a\\rb'"


def test_a_chunk_line_may_be_16_kib_long_and_no_longer() -> None:
    line = b"5;" + b"e" * (egress.MAX_HEADER_BYTES - 4) + b"\r\n"
    assert len(line) == egress.MAX_HEADER_BYTES
    _ChunkLines().feed(line)
    with pytest.raises(egress._Denied):
        _ChunkLines().feed(b"e" + line)


def test_the_last_chunk_is_not_the_end_before_its_empty_line() -> None:
    lines = _ChunkLines()
    lines.feed(b"0\r\n")
    assert not lines.done
    lines.feed(b"\r\n")
    assert lines.done


def test_the_system_resolver_asks_for_the_name_it_is_given() -> None:
    assert asyncio.run(system_resolver("127.0.0.2", 443)) == ["127.0.0.2"]


def test_a_name_resolving_twice_to_one_address_is_tried_once(net_dir: Path) -> None:
    async def scenario() -> None:
        async with upstream() as up:
            port = up.port  # closed once the stand-in is gone
        resolver = fixed_resolver({"a.test": ["127.0.0.1", "127.0.0.1"]})
        async with proxy(net_dir, [f"a.test:{port}", f"127.0.0.1:{port}"], resolver) as p:
            answer = await ask(p, f"CONNECT a.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert answer.json()["reason"] == f"cannot connect to a.test:{port}: Connect call failed ('127.0.0.1', {port})"

    asyncio.run(scenario())


def test_a_host_without_a_port_names_port_80_for_plain_http(net_dir: Path) -> None:
    line = asyncio.run(
        refused_and_unseen(net_dir, "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 403)
    )
    assert line["reason"] == "the Host header names 127.0.0.1, not the request's target"


def test_an_answer_head_arriving_in_pieces_may_pass_16_kib(net_dir: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nSet-Cookie: " + b"c" * 40000 + b"\r\nContent-Length: 2\r\n\r\nok"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head[:20000])  # the proxy reads an unfinished head of more than h11's default 16 KiB
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(head[20000:])
        await writer.drain()
        writer.close()

    async def scenario() -> bytes:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(net_dir, [f"127.0.0.1:{port}"]) as p:
            reader, writer = await open_proxy(p)
            writer.write(f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode())
            got = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
        server.close()
        return got

    got = asyncio.run(scenario())
    assert got.startswith(b"HTTP/1.1 200 OK\r\nSet-Cookie: ccc") and got.endswith(b"\r\n\r\nok")


def test_the_upstream_is_reached_once_the_hold_is_full(net_dir: Path) -> None:
    # A body that fills the hold exactly and then stalls: the upstream gets those bytes, and waits for more.
    async def scenario() -> None:
        async with upstream(http=True) as up, proxy(net_dir, [f"127.0.0.1:{up.port}"]) as p:
            up_head = (
                f"PUT / HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
            )
            _reader, writer = await open_proxy(p)
            head = f"PUT http://127.0.0.1:{up.port}/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
            writer.write(head.encode() + b"b" * (BODY_HOLD - len(up_head)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            while sum(map(len, up.received)) < BODY_HOLD and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert up.received == [up_head.encode() + b"b" * (BODY_HOLD - len(up_head))]
            writer.close()

    asyncio.run(scenario())


def test_an_agent_gone_before_its_refusal_is_only_logged(net_dir: Path) -> None:
    async def scenario() -> None:
        async with proxy(net_dir, ["127.0.0.1:1"]) as p:
            with socket.socket(socket.AF_UNIX) as client:  # blocking: all of it before the proxy runs again
                client.connect(str(p.socket_path))
                client.sendall(b"CONNECT 127.0.0.1:2 HTTP/1.1\r\n\r\n")
            # Closed before the proxy read a byte: its answer meets a closed socket.
            [line] = await wait_for_log(net_dir, 1)
        assert (line["status"], line["decision"]) == (403, "refused")

    asyncio.run(scenario())


@pytest.mark.parametrize(("room", "refused_lines"), [(0, 2), (-1, 1)])
def test_the_log_cap_is_exact(net_dir: Path, monkeypatch: pytest.MonkeyPatch, room: int, refused_lines: int) -> None:
    # With a still clock every refusal's line has the same length: a cap of two lines (+ room) holds exactly so many.
    monkeypatch.setattr(egress, "time", types.SimpleNamespace(time=lambda: 1e9, monotonic=lambda: 1.0))

    async def refuse(cap: int) -> list[dict[str, Any]]:
        sub = Path(tempfile.mkdtemp(dir=net_dir))
        async with proxy(sub, ["127.0.0.1:1"], log_cap_bytes=cap) as p:
            for _ in range(3):
                assert (await ask(p, b"CONNECT 127.0.0.1:2 HTTP/1.1\r\n\r\n")).status == 403
        return [json.loads(line) for line in (sub / "egress.jsonl").read_text().splitlines()]

    [one, *_] = asyncio.run(refuse(1 << 20))
    size = len(json.dumps(one)) + 1
    lines = asyncio.run(refuse(2 * size + room))
    assert [ln["decision"] for ln in lines] == ["refused"] * refused_lines + ["log-capped"]
