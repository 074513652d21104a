"""The egress allowlist proxy, driven through its Unix socket against servers on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.errors import JournalError, UsageError
from runner.gateway.egress import AllowRule, EgressProxy, forbidden_reason, parse_allow_host
from runner.gateway.loop import ServerThread

DEADLINE = 10.0


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
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_addresses(address: str, why: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == why


# -- servers the proxy reaches -----------------------------------------------------------------


@dataclass
class Upstream:
    """A loopback server that records every connection's bytes and echoes or answers HTTP."""

    http: bool = False
    connections: int = 0
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
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
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
        except OSError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def upstream(*, http: bool = False) -> AsyncIterator[Upstream]:
    up = Upstream(http=http)
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
            status, headers = await read_head(reader)
            assert (status, headers["x-harness-egress"]) == (200, "allowed")
            writer.write(b"ping through the tunnel")
            writer.write_eof()  # half-close: the echo still comes back
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"ping through the tunnel"
            writer.close()
            [line] = await wait_for_log(net_dir, 1)
            assert up.received == [b"ping through the tunnel"]
            assert line["decision"] == "allowed" and line["method"] == "CONNECT"
            assert (line["host"], line["port"], line["ip"]) == ("127.0.0.1", up.port, "127.0.0.1")
            assert (line["bytes_up"], line["bytes_down"]) == (23, 23)
            assert line["ts"].endswith("+00:00") and line["duration_s"] >= 0

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
    ),
    "private address via a name, absolute-form": Refusal(
        ["lan.test:{port}"],
        "GET http://lan.test:{port}/ HTTP/1.1\r\nHost: lan.test:{port}\r\n\r\n",
        "lan.test resolves to 192.168.1.10, a private address",
        "lan.test",
        {"lan.test": ["192.168.1.10"]},
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
            assert line["reason"].startswith(reason)
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
        (b"garbage\r\n\r\n", 400, "malformed request line"),
        (b"GET /local HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request target: not a proxy request"),
        (b"GET https://example.test/ HTTP/1.1\r\n\r\n", 400, "bad request target: https goes through CONNECT"),
        (b"CONNECT example.test HTTP/1.1\r\n\r\n", 400, "bad request target: a port is required"),
        (b"CONNECT 127.1:80 HTTP/1.1\r\n\r\n", 400, "bad request target: a numeric name"),
        (b"GET http://user@example.test/ HTTP/1.1\r\n\r\n", 400, "bad request target: user info"),
        (b"CONNECT \xff:1 HTTP/1.1\r\n\r\n", 400, "non-ASCII"),
        (b"CONNECT a.test:1 HTTP/1.1\r\n folded\r\n\r\n", 400, "malformed header line"),
        (b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n", 400, "more than one Host"),
        (b"GET http://a.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both"),
        (b"GET http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "unsupported Transfer-Encoding"),
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
        assert 1 < len(lines) < 6 and lines[-1]["decision"] == "log-capped"
        assert all(ln["decision"] == "refused" for ln in lines[:-1])

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
    with pytest.raises(JournalError):
        asyncio.run(p.start())
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
