"""The egress allowlist proxy (design §4 item 5): the agent's only way out under `--network allowlist`.

It listens on a Unix socket in the run's `net/` directory, which `harness-relay` turns into a
loopback port inside the container (`HTTPS_PROXY=http://127.0.0.1:8788`). It speaks `CONNECT
host:port` and absolute-form plain HTTP, and only to listed names and ports, exact match. It runs
on the host's network, so it resolves names itself and refuses any that resolve to loopback,
private, link-local (cloud metadata) or other non-global addresses unless that very IP is listed,
then connects to the address it checked (no second lookup for a rebinding DNS server to answer).

HTTP/1.1 framing is h11's (a strict, well-kept parser): it reads the agent's request and, for plain
HTTP, writes the request the upstream gets and reads the upstream's answer, which it writes anew for
the agent. So no byte of the agent's own request head or body framing ever reaches an upstream, only
what h11 parsed and wrote again. This module keeps the policy: the allowlist, the address checks, one
Host and one framing, no control character anywhere in a head or a chunk line, hop-by-hop headers
removed, the bounds (connections, head size, timeouts) and the log. After a `CONNECT` the bytes are
the agent's own (a tunnel, TLS inside as a rule).

What it cannot stop: data leaving through an allowed host, or a TLS tunnel to an allowed address
that names another site inside (SNI and Host are encrypted by then).

Why one module of this size: one connection's life (its head parsed and checked, the allowlist and address
rules, the tunnel or the re-framed request and answer, the bounds and the log line) is one piece of policy
that reads top to bottom; h11 does the framing, and nothing here is shared with another module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import h11

from runner.base.errors import JournalError, UsageError
from runner.gateway.loop import bind_unix_socket

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORT = 443
HTTP_PORT = 80
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together; also a chunk line, and the trailers
MAX_HEADERS = 100
MAX_ANSWER_HEAD_BYTES = 64 * 1024  # an upstream's status line and headers (cookies can be long)
BODY_HOLD = 64 * 1024  # a request body up to this size is read and checked before the upstream is reached
MAX_CONNECTIONS = 256
HEADER_TIMEOUT = 30.0  # seconds to send a whole request head
RESOLVE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # a connection with no byte either way for this long is closed
CHUNK = 64 * 1024
LOG_CAP_BYTES = 16 * 1024 * 1024

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# Any byte but HTAB and printable ASCII: a bare CR or LF, NUL, DEL, other controls, non-ASCII.
_UNSAFE = re.compile(rb"[^\t\x20-\x7e]")
# A chunk line as h11 reads it (size, extensions it drops, trailing blanks), with at most 16 digits.
_CHUNK_LINE = re.compile(rb"([0-9a-fA-F]{1,16})(?:;.*)?[ \t]*")
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"trailer", b"upgrade"}
)
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Not forwarded as sent: the proxy writes Host and the framing itself, and answers `Expect` itself.
_REWRITTEN = _FRAMING | {b"host", b"expect"}
# A stand-in Host for h11, which holds every HTTP/1.1 request to RFC 9112's mandatory Host: clients
# of a proxy often leave it out of CONNECT, and the target names the place anyway.
_NO_HOST = b"Host: no-host.invalid\r\n\r\n"
# The `error` of a refusal's JSON body, by status: the agent's own fault, the policy, or the way out.
_ERRORS = {
    400: "egress-bad-request",
    403: "egress-refused",
    408: "egress-bad-request",
    431: "egress-bad-request",
    502: "egress-failed",
    503: "egress-failed",
}


@dataclass(frozen=True)
class AllowRule:
    """One `--allow-host`: a lowercase name without trailing dot, or a canonical IP literal."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"


def parse_allow_host(text: str) -> AllowRule:
    """`HOST[:PORT]` (default port 443; IPv6 literals in brackets). Raises UsageError."""
    try:
        host, port = _split_authority(text.strip(), DEFAULT_PORT)
    except ValueError as exc:
        raise UsageError(f"--allow-host {text!r}: {exc}") from None
    return AllowRule(host, port)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _normalise_host(text: str) -> str:
    """A canonical IP literal or a lowercase DNS name without trailing dot. Raises ValueError."""
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            raise ValueError("a bracketed host must be an IPv6 address")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ValueError(f"{text} is not an IPv6 address") from None
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(text))
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    # ASCII before lowering: the Kelvin sign lowers to 'k', a dotted capital I to 'i' and a dot.
    if not text.isascii() or not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a host name (letters, digits, '-', dots; no wildcards)")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        # `127.1` or `0x7f.1` would reach the resolver as an IPv4 address in disguise.
        raise ValueError("a numeric name that is not a plain IPv4 address")
    return name


def _split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """(host, port) of `HOST[:PORT]`; without a port, `default_port` (None: the port is required)."""
    if text.startswith("["):
        close = text.find("]")
        host_part, rest = (text[: close + 1], text[close + 1 :]) if close > 0 else (text, "")
        if rest and not rest.startswith(":"):
            raise ValueError("junk after the IPv6 address")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError("an IPv6 address needs brackets: [ADDRESS]:PORT")
    else:
        host_part, sep, after = text.partition(":")
        port_text = after if sep else None
    host = _normalise_host(host_part)
    if port_text is None:
        if default_port is None:
            raise ValueError("a port is required")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 0 < int(port_text) < 65536):
        raise ValueError(f"bad port {port_text!r} (1-65535)")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why the host must not connect to `ip` for the agent, None for a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (why := forbidden_reason(embedded)):
            return f"{why} (embedded in IPv6)"
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip in _METADATA, "cloud metadata"),
        (ip.is_link_local, "link-local"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-global"),
    ]
    return next((why for hit, why in checks if hit), None)


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's own resolver: every address of `host`, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Denied(Exception):
    """Answer the agent with `status` and end the connection."""

    def __init__(self, status: int, reason: str, *, ip: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.ip = ip


class _Idle(Exception):
    """No byte either way for the idle timeout."""


@dataclass
class _Request:
    method: str
    host: str
    port: int
    path: str  # origin-form for a forwarded request; "" for CONNECT
    headers: list[tuple[bytes, bytes]]  # as sent (names in their case), less the stand-in Host
    framing: list[tuple[bytes, bytes]]  # the one Content-Length or Transfer-Encoding, as h11 read it


@dataclass
class _Record:
    """One line of the egress log."""

    started: float
    ts: str
    method: str | None = None
    host: str | None = None
    port: int | None = None
    ip: str | None = None
    decision: str = "refused"
    status: int | None = None
    reason: str = ""
    bytes_up: int = 0
    bytes_down: int = 0


class _ChunkLines:
    """Looks at the chunk lines and trailers of a chunked request body for control characters.

    h11 frames the body and writes what is forwarded, but drops chunk extensions without handing
    them out. This follows the same framing (a chunk line ends at its first CRLF, as in h11) only to
    look at those lines; it forwards nothing, so a disagreement with h11 could refuse a request,
    never let a byte through.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._skip = 0  # bytes of chunk data, and the CRLF after them, still to pass over
        self._trailers = False
        self.done = False

    def feed(self, data: bytes) -> None:
        """Raises _Denied(400) at the first bad line."""
        at = 0
        while at < len(data) and not self.done:
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip -= step
                at += step
                continue
            end = data.find(b"\n", at)
            stop = len(data) if end < 0 else end + 1
            self._line += data[at:stop]
            at = stop
            if len(self._line) > MAX_HEADER_BYTES:
                raise _Denied(400, f"a chunk line over {MAX_HEADER_BYTES} bytes")
            if end >= 0:
                self._end_of_line(bytes(self._line).removesuffix(b"\r\n"))
                self._line.clear()

    def _end_of_line(self, line: bytes) -> None:
        where = "trailer" if self._trailers else "chunk line"
        if bad := _UNSAFE.search(line):
            raise _Denied(400, f"{_unsafe(bad[0])} in a {where} {_show(line)}")
        if self._trailers:
            self.done = not line
            return
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise _Denied(400, f"malformed chunk line {_show(line)}")
        size = int(match[1], 16)
        self._trailers = size == 0
        self._skip = size + 2 if size else 0


class EgressProxy:
    """The allowlist proxy of one session, served on a Unix socket."""

    def __init__(
        self,
        *,
        socket_path: Path,
        rules: Sequence[AllowRule],
        log_path: Path,
        resolver: Resolver | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        log_cap_bytes: int = LOG_CAP_BYTES,
    ) -> None:
        self.socket_path = socket_path
        self.rules = frozenset(rules)
        self.log_path = log_path
        self._hosts = frozenset(rule.host for rule in self.rules)
        self._resolver: Resolver = resolver or system_resolver
        self._max_connections = max_connections
        self._idle = idle_timeout
        self._log_cap = log_cap_bytes
        self._log_fd: int | None = None
        self._log_size = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the log and listen. Raises JournalError (log) or OSError (socket)."""
        try:
            self._log_fd = os.open(
                self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            self._log_size = os.fstat(self._log_fd).st_size
        except OSError as exc:
            raise JournalError(f"cannot open the egress log {self.log_path}: {exc.strerror or exc}") from None
        try:
            sock = bind_unix_socket(self.socket_path)
            self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_HEADER_BYTES)
        except BaseException:
            os.close(self._log_fd)
            self._log_fd = None
            raise

    async def close(self) -> None:
        """Stop listening, end every open connection (each is logged), remove the socket."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    # -- one connection ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a connection handler always runs in a task
        self._tasks.add(task)
        ts = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
        rec = _Record(started=time.monotonic(), ts=ts)
        try:
            await self._serve(reader, writer, rec)
        except _Denied as denied:
            rec.decision, rec.status, rec.reason = "refused", denied.status, denied.reason
            rec.ip = denied.ip or rec.ip
            await self._deny(writer, denied, rec)
        except _Idle:
            rec.reason = f"closed after {self._idle:g}s idle"
        except (OSError, asyncio.IncompleteReadError) as exc:
            rec.reason = rec.reason or f"connection lost: {exc.__class__.__name__}"
        except asyncio.CancelledError:  # close(): not raised on, this task is the connection's own
            # (Python 3.11's stream server logs an error with a traceback for a handler that ends cancelled)
            rec.reason = rec.reason or "proxy closed"
        finally:
            writer.close()
            self._tasks.discard(task)
            if rec.method is not None or rec.status is not None:  # else nothing was asked: no line
                self._write_log(rec)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: _Record) -> None:
        if len(self._tasks) > self._max_connections:
            raise _Denied(503, f"more than {self._max_connections} connections at once")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise _Denied(431, f"request head over {MAX_HEADER_BYTES} bytes") from None
        except TimeoutError:
            raise _Denied(408, f"no complete request head within {HEADER_TIMEOUT:g}s") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                raise  # nothing was asked: no line in the log
            raise _Denied(400, "the request head ended early") from None
        agent = h11.Connection(h11.SERVER)
        request = _parse_head(agent, head, rec)
        if request.method == "CONNECT" and agent.next_event() is h11.NEED_DATA:
            raise _Denied(400, "a CONNECT request with a body")  # it would go into the tunnel unread
        addresses = await self._admit(request.host, request.port)
        if request.method != "CONNECT":
            await self._forward(request, agent, addresses, reader, writer, rec)
            return
        up_reader, up_writer = await self._open(addresses, request, rec)
        try:
            rec.decision = "allowed"
            writer.write(b"HTTP/1.1 200 Connection established\r\nX-Harness-Egress: allowed\r\n\r\n")
            rec.status = 200
            await self._tunnel(reader, writer, up_reader, up_writer, rec)
        finally:
            up_writer.close()

    async def _admit(self, host: str, port: int) -> list[str]:
        """The addresses the request may be connected to; raises _Denied otherwise."""
        if AllowRule(host, port) not in self.rules:
            if host in self._hosts:
                raise _Denied(403, f"port {port} is not allowed for {_bracketed(host)}")
            raise _Denied(403, f"{_bracketed(host)} is not in the allowlist")
        if _is_ip(host):
            return [host]  # this very literal is listed
        try:
            found = await asyncio.wait_for(self._resolver(host, port), RESOLVE_TIMEOUT)
        except OSError as exc:  # TimeoutError and socket.gaierror among them
            raise _Denied(502, f"cannot resolve {host}: {exc.__class__.__name__}") from None
        addresses: list[str] = []
        for text in found:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise _Denied(403, f"{host} resolves to an unreadable address {text[:64]!r}") from None
            why = forbidden_reason(ip)
            if why and AllowRule(str(ip), port) not in self.rules:
                raise _Denied(403, f"{host} resolves to {ip}, a {why} address", ip=str(ip))
            if str(ip) not in addresses:
                addresses.append(str(ip))
        if not addresses:
            raise _Denied(502, f"{host} has no address")
        return addresses

    async def _open(
        self, addresses: list[str], request: _Request, rec: _Record
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the first checked address that answers (never a name: no second lookup)."""
        failures = []
        for address in addresses:
            rec.ip = address
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, request.port), CONNECT_TIMEOUT)
            except OSError as exc:  # TimeoutError among them
                failures.append(exc.strerror or exc.__class__.__name__)
        raise _Denied(502, f"cannot connect to {_bracketed(request.host)}:{request.port}: {'; '.join(failures)}")

    async def _forward(
        self,
        request: _Request,
        agent: h11.Connection,
        addresses: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rec: _Record,
    ) -> None:
        """One plain-HTTP request as h11 writes it (origin-form, `Connection: close`), then the answer.

        The first BODY_HOLD bytes are read and checked before the upstream is reached, so a bad request
        of that size reaches nothing; a longer body flows on, and a fault in it ends both connections
        (the upstream gets a request cut short, never a second one)."""
        upstream = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER_HEAD_BYTES)
        port = "" if request.port == HTTP_PORT else f":{request.port}"
        host = (b"Host", f"{_bracketed(request.host)}{port}".encode())
        headers = [host, *_end_to_end(request.headers, _REWRITTEN), *request.framing, (b"Connection", b"close")]
        pending = bytearray(upstream.send(h11.Request(method=request.method, target=request.path, headers=headers)))
        if agent.they_are_waiting_for_100_continue:  # it is allowed: the body may come
            rec.bytes_down += await self._send(
                writer, agent.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        lines = _ChunkLines() if (b"Transfer-Encoding", b"chunked") in request.framing else None
        ended = False
        while not ended and len(pending) < BODY_HOLD:
            ended, data = await self._body(agent, upstream, reader, lines)
            pending += data
        up_reader, up_writer = await self._open(addresses, request, rec)
        try:
            rec.decision = "allowed"
            rec.bytes_up += await self._send(up_writer, pending)
            while not ended:
                ended, data = await self._body(agent, upstream, reader, lines)
                rec.bytes_up += await self._send(up_writer, data)
            await self._answer(upstream, up_reader, agent, writer, rec)
        finally:
            up_writer.close()

    async def _body(
        self, agent: h11.Connection, upstream: h11.Connection, reader: asyncio.StreamReader, lines: _ChunkLines | None
    ) -> tuple[bool, bytes]:
        """(whether the body ended, the bytes h11 writes for the upstream) for the next piece of the body."""
        while True:
            try:
                event = agent.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Denied(400, f"malformed request body: {exc}") from None
            if isinstance(event, h11.Data):
                return False, upstream.send(h11.Data(data=event.data))
            if isinstance(event, h11.EndOfMessage):
                return True, upstream.send(h11.EndOfMessage())  # trailers are not forwarded
            data = await self._read(reader)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            if lines is not None:
                lines.feed(data)
            agent.receive_data(data)

    async def _answer(
        self,
        upstream: h11.Connection,
        up_reader: asyncio.StreamReader,
        agent: h11.Connection,
        writer: asyncio.StreamWriter,
        rec: _Record,
    ) -> None:
        """The upstream's answer as h11 reads it, written anew for the agent with `Connection: close`."""
        while True:
            try:
                event = upstream.next_event()
            except h11.RemoteProtocolError as exc:
                if rec.status is None:
                    raise _Denied(502, f"the upstream's answer is malformed: {exc}") from None
                rec.reason = f"the upstream's answer broke off: {exc}"
                return
            if event is h11.NEED_DATA:
                data = await self._read(up_reader)
                if not data and rec.status is None:
                    raise _Denied(502, "the upstream closed the connection without an answer")
                upstream.receive_data(data)
            elif isinstance(event, h11.Response):
                rec.status = event.status_code
                headers = [*_end_to_end(event.headers.raw_items(), frozenset()), (b"Connection", b"close")]
                answer = h11.Response(status_code=event.status_code, reason=event.reason, headers=headers)
                rec.bytes_down += await self._send(writer, agent.send(answer))
            elif isinstance(event, h11.Data):
                rec.bytes_down += await self._send(writer, agent.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                rec.bytes_down += await self._send(writer, agent.send(h11.EndOfMessage()))
                return
            # else a 1xx answer: the body went before the answer was read, so nothing waits for it

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.read(CHUNK), self._idle)
        except TimeoutError:
            raise _Idle from None

    async def _send(self, writer: asyncio.StreamWriter, data: bytes | bytearray) -> int:
        """Write `data` and wait until it is taken (at most the idle timeout); its length."""
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self._idle)
        return len(data)

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        rec: _Record,
    ) -> None:
        """Copy both ways until both ends are done; an error or the idle timeout ends both."""
        last = [time.monotonic()]
        tasks = [
            asyncio.ensure_future(self._pipe(reader, up_writer, rec, upstream=True, last=last)),
            asyncio.ensure_future(self._pipe(up_reader, writer, rec, upstream=False, last=last)),
        ]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        if any(isinstance(e, _Idle) for e in errors):
            rec.reason = f"closed after {self._idle:g}s idle"
        elif errors:
            rec.reason = f"connection lost: {errors[0].__class__.__name__}"

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rec: _Record,
        *,
        upstream: bool,
        last: list[float],
    ) -> None:
        """Copy until EOF, then half-close; each read is written on at once (streams flow)."""
        while True:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), self._idle)
            except TimeoutError:
                if time.monotonic() - last[0] < self._idle:
                    continue  # the other direction is busy: a long download is not idle
                raise _Idle from None
            if not data:
                break
            last[0] = time.monotonic()
            if upstream:
                rec.bytes_up += len(data)
            else:
                rec.bytes_down += len(data)
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self._idle)
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def _deny(self, writer: asyncio.StreamWriter, denied: _Denied, rec: _Record) -> None:
        """The structured answer to a refusal: a JSON body the agent can read, then close."""
        error = _ERRORS[denied.status]
        body = json.dumps({"error": error, "host": rec.host, "port": rec.port, "reason": denied.reason}).encode()
        head = (
            f"HTTP/1.1 {denied.status} {HTTPStatus(denied.status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Harness-Egress: {'failed' if error == 'egress-failed' else 'refused'}"
            "\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), 10)

    def _write_log(self, rec: _Record) -> None:
        """Append one JSON line; never raises (a full disk must not break the agent's request)."""
        line = json.dumps(
            {
                "ts": rec.ts,
                "method": rec.method,
                "host": rec.host,
                "port": rec.port,
                "ip": rec.ip,
                "decision": rec.decision,
                "status": rec.status,
                "reason": rec.reason,
                "bytes_up": rec.bytes_up,
                "bytes_down": rec.bytes_down,
                "duration_s": round(time.monotonic() - rec.started, 3),
            }
        )
        if self._log_fd is None or self._log_size > self._log_cap:
            return
        if self._log_size + len(line) + 1 > self._log_cap:
            line = json.dumps({"ts": rec.ts, "decision": "log-capped", "reason": "later connections are not logged"})
            self._log_size = self._log_cap + 1  # the marker is the last line, even in a log filled exactly
        else:
            self._log_size += len(line) + 1
        try:
            os.write(self._log_fd, (line + "\n").encode())
        except OSError as exc:
            log.warning("egress log %s: %s", self.log_path, exc)


def _unsafe(byte: bytes) -> str:
    return f"a {'non-ASCII byte' if byte[0] > 0x7F else 'control character'} {byte[0]:#04x}"


def _show(line: bytes) -> str:
    return repr(line[:100].decode("latin-1"))


def _end_to_end(headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """`headers` less the hop-by-hop ones, those that `Connection` names (never the framing), and `drop`."""
    listed = {token.strip().lower() for name, value in headers if name.lower() == b"connection"
              for token in value.split(b",")} - _FRAMING  # fmt: skip
    gone = _HOP_BY_HOP | listed | drop
    return [(name, value) for name, value in headers if name.lower() not in gone]


def _check_head(head: bytes) -> bool:
    """The checks h11 does not make on a head that ends in CRLF CRLF; whether it names a Host.

    h11 lets through control characters other than CR, LF and NUL in a header value, bare LFs as
    line ends, obs-fold, and repeated identical Content-Lengths; all are refused here."""
    lines = head[:-4].split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise _Denied(400, f"more than {MAX_HEADERS} headers")
    for index, line in enumerate(lines):
        where = "header line" if index else "request line"
        if bad := _UNSAFE.search(line):
            raise _Denied(400, f"{_unsafe(bad[0])} in the {where} {_show(line)}")
        if index and line[:1] in (b" ", b"\t"):
            raise _Denied(400, f"an obsolete folded header line {_show(line)}")
    fields = [line.partition(b":") for line in lines[1:]]
    named = Counter(name.lower() for name, _, _ in fields)
    if named[b"host"] > 1:
        raise _Denied(400, "more than one Host header")
    if named[b"content-length"] and named[b"transfer-encoding"]:
        raise _Denied(400, "both Content-Length and Transfer-Encoding")
    if named[b"content-length"] > 1 or any(b"," in v for n, _, v in fields if n.lower() == b"content-length"):
        raise _Denied(400, "more than one Content-Length")
    if named[b"transfer-encoding"] > 1:
        raise _Denied(400, "more than one Transfer-Encoding")
    return bool(named[b"host"])


def _parse_head(agent: h11.Connection, head: bytes, rec: _Record) -> _Request:
    """The request of a head that ends in CRLF CRLF, read by `agent`; raises _Denied(400 or 403)."""
    named_host = _check_head(head)
    agent.receive_data(head if named_host else head[:-2] + _NO_HOST)
    try:
        event = agent.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Denied(400, f"malformed request head: {exc}") from None
    assert isinstance(event, h11.Request)  # noqa: S101 - a whole head gives a request or an error
    if event.http_version not in (b"1.0", b"1.1"):
        raise _Denied(400, f"unsupported HTTP version {event.http_version.decode()}")
    method, target = event.method.decode(), event.target.decode()
    rec.method = method
    headers = [(name, value) for name, value in event.headers.raw_items() if named_host or name.lower() != b"host"]
    length = next((value for name, value in event.headers if name == b"content-length"), None)
    if any(name == b"transfer-encoding" for name, _ in event.headers):
        framing = [(b"Transfer-Encoding", b"chunked")]  # h11 accepts no other coding
    else:
        framing = [] if length is None else [(b"Content-Length", length)]
    try:
        if method == "CONNECT":
            host, port = _split_authority(target, None)
            path = ""
        else:
            host, port, path = _absolute_target(target)
    except ValueError as exc:
        raise _Denied(400, f"bad request target: {exc}") from None
    rec.host, rec.port = host, port
    _check_host_header(headers, host, port, connect=method == "CONNECT")
    return _Request(method, host, port, path, headers, framing)


def _absolute_target(target: str) -> tuple[str, int, str]:
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        if scheme.lower() == "https":
            raise ValueError("https goes through CONNECT")
        raise ValueError("not a proxy request (an absolute http:// URL or CONNECT host:port)")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority or "\\" in authority or "#" in target:
        raise ValueError("user info, backslashes and fragments are not allowed")
    host, port = _split_authority(authority, HTTP_PORT)
    return host, port, path if path.startswith("/") else f"/{path}"


def _check_host_header(headers: list[tuple[bytes, bytes]], host: str, port: int, *, connect: bool) -> None:
    """A Host header naming another place than the request's target is refused (no virtual-host trick)."""
    value = next((v.decode() for k, v in headers if k.lower() == b"host"), None)
    if value is None:
        return
    try:
        named_host, named_port = _split_authority(value, 0 if connect else HTTP_PORT)
    except ValueError as exc:
        raise _Denied(400, f"bad Host header: {exc}") from None
    if named_host != host or (named_port not in (0, port)):
        raise _Denied(403, f"the Host header names {value[:100]}, not the request's target")
