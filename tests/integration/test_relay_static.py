"""harness-relay as a static binary: what the Python relay did, proved on the binary, and that it needs
nothing of the image it runs in (issue 17: the harness is to add it to any image, one without Python).

On the host, with the binary built from this checkout's source: half-close both ways, the connection
cap, TCP_NODELAY (a kept-alive exchange never waits for a delayed ACK), IPv6, the server leaving with its
command, the command's own signal dispositions, bad arguments. In containers: the relay of harness-base
in a Debian image without Python; `--mux` (the Kubernetes mode) over `docker run -i`'s stdin and stdout,
driven by the test speaking the frames itself and by the harness's own end of the tunnel
(runner/backends/kubernetes/tunnel.py), so the mode is proven without a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.backends.kubernetes.tunnel import CLOSE, DATA, EOF, HEADER, OPEN, READY, Tunnel
from runner.base.layout import GATEWAY_SOCKET, NET_DIR, RELAY
from runner.gateway.loop import ServerThread
from tests.helpers import wait_for
from tests.integration.test_relay import (
    IMAGE,
    MANAGED,
    STREAM_CLIENT,
    Streamer,
    _assert_streamed,
    _serve_unix,
    build_relay,
    free_port,
    last_json,
    relay_from_image,
    run_relay,
)

MAX_CONNECTIONS = 256  # the relay's cap
NO_PYTHON_IMAGE = "debian:bookworm-slim"  # the offline base under harness-base: no Python in it


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_relay(tmp_path_factory.mktemp("relay") / RELAY)


@pytest.fixture
def net_dir() -> Iterator[Path]:
    # Short (Unix socket paths), and traversable by the container's uid; the mount is read-only.
    path = Path(tempfile.mkdtemp(prefix="hx-net-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    thread = ServerThread("test-servers")
    thread.start()
    yield thread
    thread.stop()


def _labels() -> list[str]:
    """A label the session's reaper removes by (tests/conftest.py), and the harness's own."""
    extra = [f"--label={label}" for label in os.environ.get("HARNESS_CONTAINER_LABELS", "").split(",") if label]
    return [f"--label={MANAGED}", *extra]


HARDENED = ["--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", "10001:10001", "--pids-limit", "64", "--memory", "256m"]  # fmt: skip


# -- on the host: what the Python relay did ----------------------------------------------------------


def _program_headers(binary: Path) -> set[int]:
    """The types of an ELF64 file's program headers."""
    data = binary.read_bytes()
    assert data[:5] == b"\x7fELF\x02", binary  # ELF64
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x36)
    return {struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)}


PT_DYNAMIC, PT_INTERP = 2, 3


def test_the_binary_is_static(relay: Path) -> None:
    # No program interpreter and no dynamic section: the kernel loads it alone, whatever the image holds.
    types = _program_headers(relay)
    assert types and not types & {PT_DYNAMIC, PT_INTERP}, types


def test_bad_arguments_fail_with_125_and_one_line(relay: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = ("--", "touch", str(marker))
    cases = [
        (("--listen",), "unexpected argument '--listen'; usage: --listen HOST:PORT=SOCKET ... -- CMD"),
        (("--port", "1", *run), "unexpected argument '--port'"),
        (("--listen", "127.0.0.1:0=/x.sock", *run), "bad --listen '127.0.0.1:0=/x.sock': want HOST:PORT=SOCKET"),
        (("--listen", "127.0.0.1:70000=/x.sock", *run), "bad --listen '127.0.0.1:70000=/x.sock'"),
        (("--listen", "127.0.0.1:80", *run), "bad --listen '127.0.0.1:80'"),
        (("--listen", ":80=/x.sock", *run), "bad --listen ':80=/x.sock'"),
        (("--listen", "example.invalid:8080=/x.sock", *run), "cannot listen on example.invalid:8080: "),
        (("--listen", f"127.0.0.1:{free_port()}=/x.sock"), "no command after '--'"),
        (("--listen", f"127.0.0.1:{free_port()}=/x.sock", "--"), "no command after '--'"),
        (("--mux", "127.0.0.1:80"), "bad --mux '127.0.0.1:80': want HOST:PORT=NAME"),
        (("--mux", "127.0.0.1:8080=gateway", "--", "true"), "unexpected argument '--'; usage: --mux HOST:PORT=NAME"),
    ]
    for args, message in cases:
        r = run_relay(relay, *args)
        assert r.returncode == 125, (args, r)
        assert r.stderr.startswith("harness-relay: ") and message in r.stderr and r.stderr.count("\n") == 1, (args, r)
    assert not marker.exists()
    r = run_relay(relay, "--", "/nonexistent/agent")
    assert (r.returncode, r.stderr) == (
        127,
        "harness-relay: cannot run '/nonexistent/agent': No such file or directory\n",
    )


HALF_CLOSE_CLIENT = r"""
import json, socket, sys
a_port, b_port = int(sys.argv[1]), int(sys.argv[2])
out = {}
a = socket.create_connection(("127.0.0.1", a_port), timeout=30)
a.sendall(b"hello")
a.shutdown(socket.SHUT_WR)  # the server answers only once it has seen the end
data = b""
while chunk := a.recv(65536):
    data += chunk
out["a"] = data.decode()
b = socket.create_connection(("127.0.0.1", b_port), timeout=30)
data = b""
while chunk := b.recv(65536):  # the server's half-close ends this loop...
    data += chunk
out["b"] = data.decode()
b.sendall(b"bye")  # ... and this side still reaches it
b.shutdown(socket.SHUT_WR)
out["b_after"] = b.recv(100).decode()  # the end, already
print(json.dumps(out))
"""


def test_half_close_goes_through_both_ways(relay: Path, net_dir: Path, servers: ServerThread) -> None:
    heard: list[bytes] = []

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.read()  # to the client's EOF
        writer.write(b"got %d bytes" % len(got))
        await writer.drain()
        writer.close()

    async def speak_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"greeting")
        await writer.drain()
        writer.write_eof()
        heard.append(await reader.read())  # what the client sends after our end
        writer.close()

    servers.call(_serve_unix(net_dir / "a.sock", answer_after_eof))
    servers.call(_serve_unix(net_dir / "b.sock", speak_first))
    a_port, b_port = free_port(), free_port()
    r = run_relay(relay, "--listen", f"127.0.0.1:{a_port}={net_dir}/a.sock", "--listen",
                  f"127.0.0.1:{b_port}={net_dir}/b.sock", "--", sys.executable, "-c", HALF_CLOSE_CLIENT,
                  str(a_port), str(b_port))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout) == {"a": "got 5 bytes", "b": "greeting", "b_after": ""}
    wait_for(lambda: heard, timeout=10, what="the server to read the client's end")  # its own thread
    assert heard == [b"bye"]


CAP_CLIENT = r"""
import json, socket, sys
port, cap = int(sys.argv[1]), int(sys.argv[2])
connect = lambda: socket.create_connection(("127.0.0.1", port), timeout=30)
held = []
for _ in range(cap):
    s = connect()
    s.sendall(b"x")
    held.append(s)
echoed = sum(s.recv(1) == b"x" for s in held)  # every one went through: each holds a slot
try:  # one more: reset, not queued
    extra = connect()
    extra.sendall(b"x")
    over = repr(extra.recv(1))
except (ConnectionResetError, BrokenPipeError):
    over = "reset"
held[0].shutdown(socket.SHUT_WR)
while held[0].recv(65536):  # its end came back through the relay: the slot is free again
    pass
again = connect()
again.sendall(b"z")
print(json.dumps({"echoed": echoed, "over": over, "again": again.recv(1).decode()}))
"""


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_past_256_connections_a_new_one_is_reset_until_a_slot_is_free(
    relay: Path, net_dir: Path, servers: ServerThread
) -> None:
    # The echo server's backlog (asyncio's 100) is smaller than the burst: the relay retries a full
    # backlog until its connect timeout, it does not fail the client.
    servers.call(_serve_unix(net_dir / "echo.sock", _echo))
    port = free_port()
    r = run_relay(relay, "--listen", f"127.0.0.1:{port}={net_dir}/echo.sock", "--", sys.executable, "-c",
                  CAP_CLIENT, str(port), str(MAX_CONNECTIONS), timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout) == {"echoed": MAX_CONNECTIONS, "over": "reset", "again": "z"}


# Each exchange: a request, a first byte back, an acknowledgement on ANOTHER connection (so the first
# byte's ACK is not piggybacked and the client delays it), then the second byte. With Nagle on the
# relay's socket the second byte waits for that delayed ACK: ~40 ms an exchange.
NAGLE_CLIENT = r"""
import json, socket, sys, time
main, side = (socket.create_connection(("127.0.0.1", int(p)), timeout=30) for p in sys.argv[1:3])
for s in (main, side):  # the client's own Nagle is not under test
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(40):
    t = time.monotonic()
    main.sendall(b"req\n")
    assert main.recv(1) == b"a"
    side.sendall(b"ack\n")
    assert main.recv(1) == b"b"
    times.append(time.monotonic() - t)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] * 1000}))
"""


def test_kept_alive_exchanges_do_not_wait_for_delayed_acks(relay: Path, net_dir: Path, servers: ServerThread) -> None:
    acked = asyncio.Queue[None]()

    async def main(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readexactly(4):
                writer.write(b"a")
                await writer.drain()
                await asyncio.wait_for(acked.get(), 30)
                writer.write(b"b")
                await writer.drain()
        writer.close()

    async def side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readexactly(4):
                acked.put_nowait(None)
        writer.close()

    servers.call(_serve_unix(net_dir / "main.sock", main))
    servers.call(_serve_unix(net_dir / "side.sock", side))
    main_port, side_port = free_port(), free_port()
    r = run_relay(relay, "--listen", f"127.0.0.1:{main_port}={net_dir}/main.sock", "--listen",
                  f"127.0.0.1:{side_port}={net_dir}/side.sock", "--", sys.executable, "-c", NAGLE_CLIENT,
                  str(main_port), str(side_port))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout)["median_ms"] < 20, r.stdout  # ~40 with Nagle; well under 1 without


def _ipv6_loopback() -> bool:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_listen_address(relay: Path, net_dir: Path, servers: ServerThread) -> None:
    servers.call(_serve_unix(net_dir / "echo.sock", _echo))
    port = free_port()
    code = f"""
import socket
s = socket.create_connection(("::1", {port}), timeout=30)
s.sendall(b"over v6")
print(s.recv(100).decode())
"""
    r = run_relay(relay, "--listen", f"[::1]:{port}={net_dir}/echo.sock", "--", sys.executable, "-c", code)
    assert (r.returncode, r.stdout.strip()) == (0, "over v6"), r.stderr


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


BUSY_PROBE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print("free")
except OSError:
    print("busy")
"""


def test_the_server_leaves_with_its_command_which_keeps_its_signals(relay: Path, net_dir: Path) -> None:
    port = free_port()
    # While the command runs the port is the relay's. The command's shell has SIGPIPE at its default: the
    # Python relay handed its interpreter's SIG_IGN on to every process of the agent.
    r = run_relay(relay, "--listen", f"127.0.0.1:{port}={net_dir}/x.sock", "--", "sh", "-c",
                  'python3 -c "$0" "$1" && grep SigIgn /proc/$$/status', BUSY_PROBE, str(port))  # fmt: skip
    assert r.returncode == 0, r.stderr
    busy, sig_ignored = r.stdout.splitlines()
    assert busy == "busy"
    assert not int(sig_ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1)), sig_ignored
    wait_for(lambda: _port_free(port), timeout=5, what="the relay's server to leave after its command")


# -- in a container: no Python needed --------------------------------------------------------------------


async def _http_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"hello from the host socket; you asked " + head.split(b"\r\n")[0]
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


NO_PYTHON_SCRIPT = r"""
if command -v python3 >/dev/null || command -v python >/dev/null || compgen -G '/usr/lib/python3*' >/dev/null; then
  echo "this image has Python"; exit 3
fi
exec 3<>/dev/tcp/127.0.0.1/8787
printf 'GET /no-python HTTP/1.0\r\nHost: gateway\r\n\r\n' >&3
cat <&3
"""


@pytest.mark.docker
def test_the_relay_of_harness_base_runs_in_an_image_without_python(
    net_dir: Path, servers: ServerThread, tmp_path: Path
) -> None:
    binary = tmp_path / RELAY
    assert relay_from_image(binary), "cannot copy the relay out of harness-base"
    assert not _program_headers(binary) & {PT_DYNAMIC, PT_INTERP}  # the image's own: static too
    servers.call(_serve_unix(net_dir / GATEWAY_SOCKET, _http_answer))
    r = subprocess.run(
        ["docker", "run", "--rm", *HARDENED, *_labels(),
         "-v", f"{binary}:/opt/harness/{RELAY}:ro", "-v", f"{net_dir}:{NET_DIR}:ro",
         NO_PYTHON_IMAGE, f"/opt/harness/{RELAY}", "--listen", f"127.0.0.1:8787={NET_DIR}/{GATEWAY_SOCKET}", "--",
         "bash", "-c", NO_PYTHON_SCRIPT],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith("HTTP/1.0 200 OK"), r.stdout
    assert r.stdout.endswith("hello from the host socket; you asked GET /no-python HTTP/1.0"), r.stdout


# -- in a container: --mux, the Kubernetes mode --------------------------------------------------------


class MuxRelay:
    """`harness-relay --mux` in a hardened container whose stdin and stdout are the frame channel."""

    def __init__(self, *specs: str) -> None:
        self.name = f"harness-test-mux-{uuid.uuid4().hex[:8]}"
        args = [a for spec in specs for a in ("--mux", spec)]
        self.proc = subprocess.Popen(
            ["docker", "run", "-i", "--rm", "--name", self.name, *HARDENED, *_labels(), IMAGE, RELAY, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.frames: queue.Queue[tuple[int, int, bytes] | None] = queue.Queue()
        self.reader: threading.Thread | None = None

    def start_reading(self) -> None:
        """Frames into `self.frames` (the harness's tunnel reads the channel itself instead)."""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while len(head := self.proc.stdout.read(HEADER.size)) == HEADER.size:
            kind, conn, size = HEADER.unpack(head)
            self.frames.put((kind, conn, self.proc.stdout.read(size) if size else b""))
        self.frames.put(None)

    def send(self, kind: int, conn: int, payload: bytes = b"") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(HEADER.pack(kind, conn, len(payload)) + payload)
        self.proc.stdin.flush()

    def next(self, timeout: float = 60) -> tuple[int, int, bytes]:
        frame = self.frames.get(timeout=timeout)
        assert frame is not None, "the relay's stdout ended"
        return frame

    def data_until_eof(self, conn: int, timeout: float = 60) -> bytes:
        got = bytearray()
        while (frame := self.next(timeout))[:2] != (EOF, conn):
            assert frame[:2] == (DATA, conn), frame[:2]
            got += frame[2]
        return bytes(got)

    def exec(self, code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["docker", "exec", self.name, "python3", "-c", code, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def close(self) -> int | None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the harness is gone: the relay ends, and --rm removes the container
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return None
        finally:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False, timeout=60)


@pytest.fixture
def mux() -> Iterator[Callable[..., MuxRelay]]:
    made: list[MuxRelay] = []

    def make(*specs: str) -> MuxRelay:
        made.append(MuxRelay(*specs))
        return made[-1]

    yield make
    for relay in made:
        relay.close()


def _finish(client: subprocess.Popen[str]) -> Any:
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    return last_json(out)


MUX_CLIENT = r"""
import json, socket
s = socket.create_connection(("127.0.0.1", 8787), timeout=30)
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
answer = b""
while chunk := s.recv(65536):
    answer += chunk
out = {"answer": answer.decode()}
try:  # the harness refuses this one: the reset may come before connect() returns, under load
    r = socket.create_connection(("127.0.0.1", 8788), timeout=30)
    r.sendall(b"x")
    out["refused"] = repr(r.recv(100))
except ConnectionResetError:
    out["refused"] = "reset"
print(json.dumps(out))
"""


@pytest.mark.docker
def test_mux_frames_open_data_eof_both_ways_then_close(mux: Callable[..., MuxRelay]) -> None:
    relay = mux("127.0.0.1:8787=gateway", "127.0.0.1:8788=egress")
    relay.start_reading()
    assert relay.next() == (READY, 0, b"")  # every port bound
    client = relay.exec(MUX_CLIENT)
    kind, conn, name = relay.next()
    assert (kind, name) == (OPEN, b"gateway") and conn != 0
    assert relay.data_until_eof(conn) == b"hello"  # the client's half-close is an EOF frame
    relay.send(DATA, conn, b"world")
    relay.send(EOF, conn)
    assert relay.next() == (CLOSE, conn, b"")  # both halves ended: the harness may let go of its end
    kind, refused, name = relay.next()
    assert (kind, name) == (OPEN, b"egress") and refused > conn
    relay.send(CLOSE, refused)  # e.g. the host's socket is absent
    assert _finish(client) == {"answer": "world", "refused": "reset"}
    relay.send(DATA, refused, b"late")  # an id that ended: ignored, nothing breaks
    assert relay.close() == 0  # stdin's end is the relay's


BULK_CLIENT = r"""
import hashlib, json, socket
s = socket.create_connection(("127.0.0.1", 8787), timeout=60)
s.sendall(bytes(range(256)) * 16384)  # 4 MiB up; meanwhile the harness pushes 32 MiB down, unread
s.shutdown(socket.SHUT_WR)
digest, size = hashlib.sha256(), 0
while chunk := s.recv(1 << 20):
    digest.update(chunk)
    size += len(chunk)
print(json.dumps({"size": size, "sha256": digest.hexdigest()}))
"""


@pytest.mark.docker
def test_mux_bulk_both_ways_with_bounded_memory(mux: Callable[..., MuxRelay]) -> None:
    relay = mux("127.0.0.1:8787=gateway")
    relay.start_reading()
    assert relay.next() == (READY, 0, b"")
    client = relay.exec(BULK_CLIENT)
    kind, conn, _ = relay.next()
    assert kind == OPEN
    down = hashlib.sha256()
    block = hashlib.sha512(b"harness").digest() * 1024  # 64 KiB
    for i in range(512):  # 32 MiB, while the client is still sending and not reading
        chunk = bytes([i % 256]) + block[1:]
        down.update(chunk)
        relay.send(DATA, conn, chunk)
    relay.send(EOF, conn)
    assert relay.data_until_eof(conn) == bytes(range(256)) * 16384
    assert relay.next() == (CLOSE, conn, b"")
    assert _finish(client) == {"size": 512 * 65536, "sha256": down.hexdigest()}
    # The relay (pid 1) held a bounded queue for the slow client and let stdin wait: a few MiB at
    # most, never the 32 MiB it was sent.
    status = subprocess.run(["docker", "exec", relay.name, "cat", "/proc/1/status"], capture_output=True,
                            text=True, check=True, timeout=60).stdout  # fmt: skip
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert peak_kib < 8 * 1024, status


@pytest.mark.docker
def test_mux_past_256_connections_a_new_one_is_reset(mux: Callable[..., MuxRelay]) -> None:
    relay = mux("127.0.0.1:8787=gateway")
    relay.start_reading()
    assert relay.next() == (READY, 0, b"")
    client = relay.exec(CAP_CLIENT, "8787", str(MAX_CONNECTIONS))
    opened: set[int] = set()
    while client.poll() is None:  # the harness's side: echo every byte, end each end with the client's
        try:
            kind, conn, payload = relay.next(timeout=0.2)
        except queue.Empty:
            continue
        if kind == OPEN:
            opened.add(conn)
        elif kind == DATA:
            relay.send(DATA, conn, payload)
        elif kind == EOF:
            relay.send(EOF, conn)
    assert _finish(client) == {"echoed": MAX_CONNECTIONS, "over": "reset", "again": "z"}
    assert len(opened) == MAX_CONNECTIONS + 1  # the 257th was never opened: reset at the door


@pytest.mark.docker
def test_mux_with_the_harness_tunnel_streams_incrementally(
    mux: Callable[..., MuxRelay], net_dir: Path, servers: ServerThread
) -> None:
    # The Kubernetes backend's own end of the tunnel (its exec stream replaced by the container's pipes)
    # and a host socket that streams: the first event must arrive before the second is sent.
    streamer = Streamer()
    servers.call(_serve_unix(net_dir / GATEWAY_SOCKET, streamer.handle))
    relay = mux("127.0.0.1:8787=gateway")
    stream = _PipeStream(relay.proc)
    tunnel = Tunnel(stream, {"gateway": net_dir / GATEWAY_SOCKET})
    tunnel.thread.start()
    try:
        assert tunnel.ready.wait(60) and stream.is_open()
        output = relay.exec(STREAM_CLIENT, "8787").communicate(timeout=120)[0]
        _assert_streamed(streamer, output)
        # Each connection ended both ways, and the relay's CLOSE let the host's socket go.
        wait_for(lambda: not tunnel.socks, timeout=30, what="the tunnel to close its sockets")
    finally:
        relay.close()
        tunnel.thread.join(30)


class _PipeStream:
    """What `Tunnel` uses of the Kubernetes client's exec stream, over `docker run -i`'s pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buffer = bytearray()
        self.ended = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while data := self.proc.stdout.read1(65536):
            with self.changed:
                self.buffer += data
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def write_stdin(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def is_open(self) -> bool:
        with self.changed:
            return not self.ended or bool(self.buffer)

    def update(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.buffer or self.ended, timeout)

    def peek_stdout(self) -> bool:
        with self.changed:
            return bool(self.buffer)

    def read_stdout(self) -> bytes:
        with self.changed:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data

    def read_stderr(self) -> bytes:
        return b""

    def close(self) -> None:
        pass
