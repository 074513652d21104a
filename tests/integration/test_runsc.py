"""gVisor as the harness registers it (scripts/ensure-docker.sh): coreutils work in the sandbox,
and a process in it reaches a host Unix socket through a read-only bind mount of its directory
(how the model gateway reaches an agent), with runc as the control.

Bookworm's runsc (0.0~20221219) fails both: `ls`/`stat` get EINVAL from statx, and without
`--host-uds=open` a host socket in a bind mount cannot be connected to.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.backends.base import Backend
from runner.backends.watchdog import run_container
from runner.base.layout import AGENT_UID, NET_DIR, WORKSPACE
from runner.base.output import CappedBuffer
from runner.record.models import Limits
from runner.sandbox.container import bind, hardened_spec, labels

pytestmark = pytest.mark.docker

IMAGE = "harness-base:latest"
RUNTIMES = ["runc", "runsc"]
GREETING = b"harness-uds-ok"


@pytest.fixture(scope="module")
def backend() -> Backend:
    from runner.backends.docker.engine import DockerBackend

    engine = DockerBackend()
    runtimes = engine.check().runtimes
    assert "runsc" in runtimes, f"runsc is not registered (run scripts/ensure-docker.sh); engine has {runtimes}"
    return engine


def _run(backend: Backend, runtime: str, command: list[str], *mounts: tuple[Path, str, bool]) -> tuple[int, str]:
    spec = hardened_spec(
        image=IMAGE,
        command=["sh", "-c", 'exec "$@" 2>&1', "sh", *command],
        limits=Limits(memory_bytes=256 * 1024**2, pids=64),
        mounts=tuple(bind(src, target, read_only=ro) for src, target, ro in mounts),
        labels=labels("runsc-test", "k", "agent"),
        runtime=runtime,
    )
    out = CappedBuffer()
    result = run_container(backend, spec, timeout=60, output=out)
    return (result.exit_code if result.exit_code is not None else -1), out.text()


def _host_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"harness-test-{prefix}-"))
    path.chmod(0o755)  # the agent uid must be able to look inside
    return path


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_coreutils_ls_and_stat_work_in_a_hardened_container(backend: Backend, runtime: str) -> None:
    ws = _host_dir("ws")
    try:
        (ws / "hello.txt").write_text("hi\n")
        os.chown(ws, AGENT_UID, AGENT_UID)
        os.chown(ws / "hello.txt", AGENT_UID, AGENT_UID)
        code, out = _run(
            backend, runtime,
            ["sh", "-c", f"ls -la {WORKSPACE} && stat -c 'size=%s uid=%u' {WORKSPACE}/hello.txt && ls -la /"],
            (ws, WORKSPACE, False),
        )  # fmt: skip
    finally:
        (ws / "hello.txt").unlink()
        ws.rmdir()
    assert code == 0, out
    assert "hello.txt" in out and "statx" not in out
    assert f"size=3 uid={AGENT_UID}" in out
    assert "workspace" in out  # `ls -la /` listed the root


@dataclass
class SocketServer:
    """A host Unix socket that greets each client and records what the client sent."""

    path: Path
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self.path.chmod(0o666)  # the agent uid connects; it cannot replace it (read-only mount)
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                self.received.append(conn.recv(256))
                conn.sendall(GREETING)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def served() -> Iterator[SocketServer]:
    net = _host_dir("net")
    server = SocketServer(net / "gateway.sock")
    try:
        yield server
    finally:
        server.close()
        for child in net.iterdir():
            child.unlink()
        net.rmdir()


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect failed:", exc)
    sys.exit(3)
s.sendall(b"hello from inside")
print("reply:", s.recv(256).decode())
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_host_unix_socket_in_a_read_only_bind_mount_is_reachable(
    backend: Backend, runtime: str, served: SocketServer
) -> None:
    code, out = _run(
        backend, runtime, ["python3", "-c", CLIENT, f"{NET_DIR}/gateway.sock"], (served.path.parent, NET_DIR, True)
    )
    assert code == 0, out
    assert f"reply: {GREETING.decode()}" in out
    assert served.received == [b"hello from inside"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_symlink_to_an_unmounted_host_socket_reaches_nothing(
    backend: Backend, runtime: str, served: SocketServer
) -> None:
    """--host-uds=open opens sockets the sandbox can see, not host paths a symlink names. The
    workspace (the agent's, writable) holds a symlink to the served socket's host path, which is
    not mounted: connecting through it fails, while the mounted socket (the control) answers."""
    ws = _host_dir("ws")
    try:
        (ws / "sneaky.sock").symlink_to(served.path)
        code, out = _run(
            backend, runtime,
            ["sh", "-c", f"python3 -c '{CLIENT}' {WORKSPACE}/sneaky.sock; echo rc=$?; "
                         f"python3 -c '{CLIENT}' {NET_DIR}/gateway.sock"],
            (ws, WORKSPACE, False), (served.path.parent, NET_DIR, True),
        )  # fmt: skip
    finally:
        (ws / "sneaky.sock").unlink()
        ws.rmdir()
    assert "connect failed" in out and "rc=3" in out, out
    assert code == 0 and f"reply: {GREETING.decode()}" in out, out  # the control
    assert served.received == [b"hello from inside"]
