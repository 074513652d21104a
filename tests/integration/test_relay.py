"""harness-relay: the loopback ports of a `--network none` container, and the egress proxy behind one.

The relay is a static binary, so its process semantics (exec, exit codes, bind failures, resets)
are tested on the host too, with the binary built from this checkout's source (`relay_binary`); the
Docker tests run it where it lives, in a hardened container as the agent's uid, with the run's network
directory mounted read-only.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.backends.watchdog import run_container
from runner.base.layout import EGRESS_PORT, EGRESS_SOCKET, GATEWAY_PORT, GATEWAY_SOCKET, NET_DIR, RELAY
from runner.base.output import CappedBuffer
from runner.gateway.egress import EgressProxy, parse_allow_host
from runner.gateway.loop import ServerThread
from runner.record.models import Limits
from runner.sandbox.container import bind, hardened_spec, labels

RELAY_SOURCE = Path(__file__).resolve().parents[2] / "images" / "base" / f"{RELAY}.c"
RELAY_CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-Werror"]  # as images/base/Dockerfile builds it
IMAGE = "harness-base:latest"
MANAGED = "io.solo-harness.managed=1"
STREAM_DEADLINE = 20.0  # how long the streaming server waits for the client's acknowledgement


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


def relay_from_image(dest: Path) -> bool:
    """Copy the relay out of harness-base (a created, never started, container of our own image)."""
    made = subprocess.run(["docker", "create", "--label", MANAGED, IMAGE, "true"], capture_output=True, text=True,
                          check=False, timeout=120)  # fmt: skip
    if made.returncode != 0:
        return False
    container = made.stdout.strip()
    try:
        copied = subprocess.run(["docker", "cp", f"{container}:/usr/local/bin/{RELAY}", str(dest)],
                                capture_output=True, check=False, timeout=120)  # fmt: skip
        return copied.returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, timeout=120)


def build_relay(dest: Path) -> Path:
    """The relay built at `dest` from this checkout's source with the host's gcc; without one (or without a
    static libc), the binary in harness-base; without either, the test is skipped."""
    if shutil.which("gcc"):
        built = subprocess.run(["gcc", *RELAY_CFLAGS, "-o", str(dest), str(RELAY_SOURCE)],
                               capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
        if built.returncode == 0:
            return dest
    if shutil.which("docker") and relay_from_image(dest):
        return dest
    pytest.skip("no gcc to build the relay with, and no harness-base to copy it from")


@pytest.fixture(scope="session")
def relay_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_relay(tmp_path_factory.mktemp("relay") / RELAY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_relay(relay: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(relay), *args], capture_output=True, text=True, timeout=timeout, check=False)


def run_in_container(command: list[str], net_dir: Path) -> tuple[int | None, str]:
    from runner.backends.docker.engine import DockerBackend

    spec = hardened_spec(
        image=IMAGE,
        command=command,
        limits=Limits(memory_bytes=256 * 1024**2, pids=64),
        mounts=(bind(net_dir, NET_DIR, read_only=True),),
        labels=labels("relay-test", "relay", "agent"),
        workdir="/tmp",
    )
    out = CappedBuffer()
    result = run_container(DockerBackend(), spec, timeout=120, output=out)
    return result.exit_code, out.text()


def last_json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


# -- a streamed answer over a Unix socket ------------------------------------------------------


class Streamer:
    """Sends the first event, then the second only after the client has acknowledged the first on
    a second connection: a relay that buffers until the end never lets the client see the first."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.acked = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /ack "):
            self.events.append("ack")
            self.acked.set()
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(b"data: one\n\n")
            await writer.drain()
            try:
                await asyncio.wait_for(self.acked.wait(), STREAM_DEADLINE)
                self.events.append("sent two")
                writer.write(b"data: two\n\n")
            except TimeoutError:
                self.events.append("no ack")
                writer.write(b"data: late\n\n")
        await writer.drain()
        writer.close()


async def _serve_unix(path: Path, handler: Any) -> asyncio.Server:
    server = await asyncio.start_unix_server(handler, path=str(path))
    path.chmod(0o666)
    return server


# The client polls the stream with a deadline (the socket timeout), acknowledges the first event on
# a second connection, then reads to the end.
STREAM_CLIENT = r"""
import json, socket, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.sendall(b"GET /stream HTTP/1.1\r\nHost: gateway\r\n\r\n")
got = b""
while b"data: one" not in got:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
ack = socket.create_connection(("127.0.0.1", port), timeout=60)
ack.sendall(b"GET /ack HTTP/1.1\r\nHost: gateway\r\n\r\n")
ack_status = ack.recv(100).split(b"\r\n")[0].decode()
while chunk := s.recv(65536):
    got += chunk
print(json.dumps({"ack": ack_status, "body": got.partition(b"\r\n\r\n")[2].decode()}))
"""


def _assert_streamed(streamer: Streamer, output: str) -> None:
    result = last_json(output)
    assert streamer.events == ["ack", "sent two"], output
    assert result == {"ack": "HTTP/1.1 204 No Content", "body": "data: one\n\ndata: two\n\n"}


# -- on the host ----------------------------------------------------------------------------------


def test_without_listeners_the_relay_is_the_command(relay_binary: Path) -> None:
    # exec, not a child: the pid, the exit code and the signals are the command's own.
    proc = subprocess.Popen(
        [str(relay_binary), "--", sys.executable, "-c", "import os; print(os.getpid()); exit(7)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, int(out)) == (7, proc.pid)


def test_with_listeners_the_command_still_owns_pid_and_exit_code(net_dir: Path, relay_binary: Path) -> None:
    port = free_port()
    code = "import os, socket; socket.create_connection(('127.0.0.1', %d)).close(); print(os.getpid()); exit(9)"
    proc = subprocess.Popen(
        [str(relay_binary), "--listen", f"127.0.0.1:{port}={net_dir}/absent.sock", "--",
         sys.executable, "-c", code % port],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, int(out)) == (9, proc.pid)  # and the port was bound before the command ran


def test_a_port_that_cannot_be_bound_fails_with_125_before_the_command(net_dir: Path, relay_binary: Path) -> None:
    marker = net_dir / "ran"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_relay(relay_binary, "--listen", f"127.0.0.1:{port}={net_dir}/x.sock", "--", "touch", str(marker))
    assert r.returncode == 125 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert not marker.exists()
    r = run_relay(relay_binary, "--listen", "nonsense", "--", "touch", str(marker))
    assert r.returncode == 125 and "bad --listen" in r.stderr and not marker.exists()
    # The positive control: a free port, and the command runs.
    r = run_relay(relay_binary, "--listen", f"127.0.0.1:{free_port()}={net_dir}/x.sock", "--", "touch", str(marker))
    assert r.returncode == 0 and marker.exists()


def test_an_absent_socket_resets_the_connection(net_dir: Path, relay_binary: Path) -> None:
    port = free_port()
    code = f"""
import socket
try:  # the reset may come before connect() returns, or at the first read
    c = socket.create_connection(("127.0.0.1", {port}), timeout=30)
    c.sendall(b"GET / HTTP/1.1\\r\\n\\r\\n")
    print("read", c.recv(100))
except ConnectionResetError:
    print("reset")
"""
    r = run_relay(relay_binary, "--listen", f"127.0.0.1:{port}={net_dir}/absent.sock", "--", sys.executable, "-c", code)
    assert (r.returncode, r.stdout.strip()) == (0, "reset"), r.stderr
    assert "absent.sock: No such file or directory" in r.stderr


def test_a_stream_arrives_incrementally_through_the_relay_on_the_host(
    net_dir: Path, servers: ServerThread, relay_binary: Path
) -> None:
    streamer = Streamer()
    servers.call(_serve_unix(net_dir / GATEWAY_SOCKET, streamer.handle))
    port = free_port()
    listen = f"127.0.0.1:{port}={net_dir}/{GATEWAY_SOCKET}"
    r = run_relay(relay_binary, "--listen", listen, "--", sys.executable, "-c", STREAM_CLIENT, str(port))
    assert r.returncode == 0, r.stderr
    _assert_streamed(streamer, r.stdout)


# -- in a hardened container ----------------------------------------------------------------------


@pytest.mark.docker
def test_a_stream_arrives_incrementally_in_the_container(net_dir: Path, servers: ServerThread) -> None:
    streamer = Streamer()
    servers.call(_serve_unix(net_dir / GATEWAY_SOCKET, streamer.handle))
    listen = f"127.0.0.1:{GATEWAY_PORT}={NET_DIR}/{GATEWAY_SOCKET}"
    code, output = run_in_container(
        [RELAY, "--listen", listen, "--", "python3", "-c", STREAM_CLIENT, str(GATEWAY_PORT)], net_dir
    )
    assert code == 0, output
    _assert_streamed(streamer, output)


class _Recorder(ThreadingHTTPServer):
    """A host loopback HTTP server that counts connections and records request lines."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.requestline, dict(self.headers.items())))
                body = b"hello from the host"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def recorders() -> Iterator[tuple[_Recorder, _Recorder]]:
    pair = (_Recorder(), _Recorder())
    threads = [threading.Thread(target=r.serve_forever, daemon=True) for r in pair]
    for t in threads:
        t.start()
    yield pair
    for r in pair:
        r.shutdown()
        r.server_close()


EGRESS_CLIENT = r"""
import http.client, json, socket, sys
proxy, allowed, unlisted = (int(a) for a in sys.argv[1:4])
out = {}
conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=60)
conn.set_tunnel("127.0.0.1", allowed)  # what HTTPS_PROXY makes a client do
conn.request("GET", "/through-the-tunnel", headers={"X-From": "container"})
answer = conn.getresponse()
out["allowed"] = [answer.status, answer.read().decode()]
conn.close()
s = socket.create_connection(("127.0.0.1", proxy), timeout=60)
s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (unlisted, unlisted))
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
out["refused"] = [head.split(b"\r\n")[0].decode(), "X-Harness-Egress: refused" in head.decode(), json.loads(body)]
try:  # without the proxy: the container's own loopback, where nothing listens
    socket.create_connection(("127.0.0.1", allowed), timeout=10).close()
    out["direct"] = "connected"
except OSError as exc:
    out["direct"] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.mark.docker
def test_egress_through_the_relay_reaches_a_listed_host_and_is_refused_an_unlisted_one(
    net_dir: Path, servers: ServerThread, recorders: tuple[_Recorder, _Recorder], tmp_path: Path
) -> None:
    allowed, unlisted = recorders
    log_path = tmp_path / "egress.jsonl"  # in the journal, never in the agent's mount
    servers.serve(
        EgressProxy(
            socket_path=net_dir / EGRESS_SOCKET,
            rules=[parse_allow_host(f"127.0.0.1:{allowed.port}")],
            log_path=log_path,
        )
    )
    listen = f"127.0.0.1:{EGRESS_PORT}={NET_DIR}/{EGRESS_SOCKET}"
    code, output = run_in_container(
        [RELAY, "--listen", listen, "--", "python3", "-c", EGRESS_CLIENT,
         str(EGRESS_PORT), str(allowed.port), str(unlisted.port)],
        net_dir,
    )  # fmt: skip
    assert code == 0, output
    result = last_json(output)
    assert result["allowed"] == [200, "hello from the host"]
    assert [(line, headers.get("X-From")) for line, headers in allowed.requests] == [
        ("GET /through-the-tunnel HTTP/1.1", "container")
    ]
    status_line, marked, body = result["refused"]
    assert status_line == "HTTP/1.1 403 Forbidden" and marked
    assert body["error"] == "egress-refused" and body["port"] == unlisted.port
    assert body["reason"] == f"port {unlisted.port} is not allowed for 127.0.0.1"
    assert unlisted.connections == 0 and unlisted.requests == []
    assert result["direct"] == "ConnectionRefusedError"  # --network none: no way round the proxy
    servers.stop()  # closes the proxy: every line is written
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    # Each line is written when its connection ends: the order of the two is not fixed.
    assert sorted((ln["decision"], ln["port"], ln["ip"] or "") for ln in lines) == [
        ("allowed", allowed.port, "127.0.0.1"),
        ("refused", unlisted.port, ""),
    ]
    [tunnel] = [ln for ln in lines if ln["decision"] == "allowed"]
    assert tunnel["bytes_up"] > 0 and tunnel["bytes_down"] > len("hello from the host")
