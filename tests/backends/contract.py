"""The engines' contract as tests that run against any engine (what runner/backends/base.py's docstring promises,
and what the supervisor relies on): an engine's tests subclass `EngineContract` (or `RealEngineContract`, for an
engine that runs real containers) and give it a `subject` fixture, a `Subject` that says how to ask their engine
for each behaviour. tests/backends/test_contract.py does it for the fake, Docker and Kubernetes;
tests/backends/test_delegating.py for a third engine.

The watchdog (deadline, cancel, disk watch) runs above the engines; these tests drive it through each engine's
start/wait/stop/finish/remove, so an engine that cannot stop, measure or report an OOM fails here. The fake takes
part only so the loop's unit tests can trust it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.backends.base import LABEL_ROLE, Backend, ContainerSpec, DiskWatch, Mount, Service
from runner.backends.watchdog import run_container
from runner.base.errors import ImageMissingError
from runner.base.output import CappedBuffer
from runner.record.models import Limits
from runner.sandbox.container import hardened_spec, labels
from tests.helpers import wait_for

MIB = 1024**2


@dataclass
class Subject:
    """An engine under the contract, and the commands that make its containers behave as each test needs."""

    backend: Backend
    echo_exit: Callable[[str, int], list[str]]
    sleep: Callable[[float], list[str]]  # says "sleeping" once it runs, then sleeps
    oom: list[str]  # allocates far past a 64 MiB cap
    flood: Callable[[int], list[str]]  # writes N MiB to stdout, then exits 0
    fill: Callable[[str, int], list[str]]  # writes N MiB under a path, then sleeps
    leave_container: Callable[[dict[str, str]], None]  # a container with these labels, as a crash leaves one
    posture_applied: Callable[[dict[str, Any]], bool]  # the submission carries design §4's hardening
    # copies GIVEN/in.txt to KEPT/copy.txt, writes KEPT/sub/new.txt, removes KEPT/old.txt
    use_mounts: Callable[[str, str], list[str]]
    # the spec made one whose start does not end (a pod no node takes); None: this engine starts at once
    pending: Callable[[ContainerSpec], ContainerSpec] | None = None


SHELL_OOM = ["sh", "-c", "head -c 1000m /dev/zero | tail -c 900m > /dev/null"]


def shell_subject(
    backend: Backend, leave: Callable[[dict[str, str]], None], posture: Callable[[dict[str, Any]], bool]
) -> Subject:
    """The subject of an engine that runs real containers of harness-base: each behaviour a shell command."""
    return Subject(
        backend,
        lambda text, code: ["sh", "-c", f"echo {text}; exit {code}"],
        lambda seconds: ["sh", "-c", f"echo sleeping; exec sleep {seconds}"],
        SHELL_OOM,  # tail holds the last 900 MiB in memory
        lambda mib: ["sh", "-c", f"head -c {mib}m /dev/zero | tr '\\0' x; echo; echo flood-done"],
        lambda path, mib: ["sh", "-c", f"head -c {mib}m /dev/zero > {path}/fill; sleep 300"],
        leave,
        posture,
        lambda given, kept: [
            "sh",
            "-c",
            f"cp {given}/in.txt {kept}/copy.txt && mkdir {kept}/sub && "
            f"echo 'made inside' > {kept}/sub/new.txt && rm {kept}/old.txt",
        ],
    )


def spec(
    command: list[str], image: str = "harness-base:latest", mounts: tuple[Mount, ...] = (), **kwargs: object
) -> ContainerSpec:
    return hardened_spec(
        image=image,
        command=command,
        limits=Limits(memory_bytes=64 * MIB),
        mounts=mounts,
        labels=labels("contract", "k", "agent"),
        workdir="/tmp",
        **kwargs,  # type: ignore[arg-type]
    )


class EngineContract:
    """What every engine keeps. A subclass (named Test...) provides the `subject` fixture."""

    @pytest.fixture
    def subject(self) -> Subject:
        raise NotImplementedError("an engine's tests give the contract its subject")

    def test_output_and_exit_code(self, subject: Subject) -> None:
        out = CappedBuffer()
        result = run_container(subject.backend, spec(subject.echo_exit("hello-contract", 3)), timeout=120, output=out)
        assert result.exit_code == 3 and not result.timed_out and not result.oom_killed and result.failure is None
        assert "hello-contract" in out.text()
        assert result.container_id

    def test_the_deadline_stops_a_container_past_its_timeout(self, subject: Subject) -> None:
        result = run_container(
            subject.backend, spec(subject.sleep(300)), timeout=3, output=CappedBuffer(), stop_grace=2
        )
        assert result.timed_out and not result.cancelled
        # The deadline counts the start too: a pod still starting after 3 s (a busy node) never ran.
        assert result.exit_code in (137, 143) if result.ran else result.exit_code is None  # SIGKILL, SIGTERM
        assert result.duration_seconds < 120

    def test_cancel_stops_a_running_container(self, subject: Subject) -> None:
        out = CappedBuffer()

        def cancel() -> bool:
            return "sleeping" in out.text()  # once the command runs, however long its start took

        result = run_container(
            subject.backend, spec(subject.sleep(300)), timeout=240, output=out, stop_grace=2, cancel=cancel
        )
        assert result.cancelled and not result.timed_out and result.ran and result.exit_code in (137, 143)

    def test_the_deadline_and_cancel_apply_while_a_container_starts(self, subject: Subject) -> None:
        """The contract's first item: a start that takes long (a pod that waits for a node) is under the watchdog,
        as the command is: the deadline and `stop --now` end it, and the result says the command never ran."""
        if subject.pending is None:
            pytest.skip("this engine starts a container at once: there is no start to give up")
        began = time.monotonic()
        result = run_container(
            subject.backend, subject.pending(spec(subject.sleep(300))), timeout=3, output=CappedBuffer(), stop_grace=2
        )
        assert result.timed_out and not result.ran and result.exit_code is None and result.failure is None, result
        assert time.monotonic() - began < 90  # not the pending timeout (10 minutes)
        asked: list[float] = []

        def cancel() -> bool:
            asked.append(time.monotonic())
            return len(asked) >= 2

        result = run_container(
            subject.backend, subject.pending(spec(subject.sleep(300))), timeout=240, output=CappedBuffer(),
            stop_grace=2, cancel=cancel,
        )  # fmt: skip
        assert result.cancelled and not result.timed_out and not result.ran, result
        marker = {"io.solo-harness.session": "contract", LABEL_ROLE: "agent"}
        wait_for(lambda: result.container_id not in subject.backend.list_containers(marker), timeout=60)

    def test_an_oom_kill_is_reported(self, subject: Subject) -> None:
        out = CappedBuffer()
        result = run_container(subject.backend, spec(subject.oom), timeout=120, output=out)
        assert result.oom_killed and result.exit_code != 0, (result, out.text())

    def test_output_past_the_cap_is_dropped_without_blocking_the_container(self, subject: Subject) -> None:
        out = CappedBuffer(cap=64 * 1024)
        result = run_container(subject.backend, spec(subject.flood(20)), timeout=120, output=out)
        assert result.exit_code == 0 and not result.timed_out  # never blocked by the capped reader
        assert len(out.data) == 64 * 1024 and out.text().startswith("x")

    def test_the_disk_watch_stops_a_container_that_fills_its_path(self, subject: Subject) -> None:
        watched = spec(subject.fill("/tmp", 40), disk_watch=DiskWatch("/tmp", 8 * MIB, interval=0.5))
        result = run_container(subject.backend, watched, timeout=240, output=CappedBuffer(), stop_grace=2)
        assert result.disk_exceeded and not result.timed_out

    def test_writable_mounts_are_on_the_host_after_finish(self, subject: Subject, tmp_path: Path) -> None:
        """The contract's third item (runner.backends.base): a read-only mount shows the host's files; once the
        run is over (`finish()` returned), a writable mount's host directory holds what the container left in it:
        new files and directories, and not the ones it removed. The harness reads the agent's report and the
        checkpoint's bundle there."""
        given, kept = tmp_path / "given", tmp_path / "kept"
        given.mkdir(mode=0o755)
        kept.mkdir()
        kept.chmod(0o777)  # the agent's uid writes here
        (given / "in.txt").write_text("from the host\n")
        (kept / "old.txt").write_text("to be removed\n")
        mounts = (Mount(given, "/given", read_only=True), Mount(kept, "/kept", read_only=False))
        out = CappedBuffer()
        result = run_container(
            subject.backend, spec(subject.use_mounts("/given", "/kept"), mounts=mounts), timeout=120, output=out
        )
        assert result.exit_code == 0, out.text()
        assert (kept / "copy.txt").read_text() == "from the host\n"
        assert (kept / "sub" / "new.txt").read_text() == "made inside\n"
        assert sorted(p.name for p in kept.iterdir()) == ["copy.txt", "sub"]
        assert sorted(p.name for p in given.iterdir()) == ["in.txt"]

    def test_the_posture_is_in_what_the_backend_submits(self, subject: Subject) -> None:
        submitted = subject.backend.submission(spec(subject.echo_exit("x", 0)))
        assert subject.posture_applied(submitted), submitted

    def test_a_missing_image_is_a_translated_error(self, subject: Subject) -> None:
        with pytest.raises(ImageMissingError):
            run_container(
                subject.backend, spec(subject.echo_exit("x", 0), image="harness-test-absent:0"), timeout=60,
                output=CappedBuffer(),
            )  # fmt: skip

    def test_containers_are_listed_and_reaped_by_label(self, subject: Subject) -> None:
        marker = {"io.solo-harness.session": "contract-reap", "io.solo-harness.managed": "1"}
        subject.leave_container(marker)
        found = subject.backend.list_containers(marker)
        assert len(found) == 1
        assert next(iter(found.values()))["io.solo-harness.session"] == "contract-reap"
        assert subject.backend.reap(marker) == list(found)
        assert subject.backend.list_containers(marker) == {}

    def test_a_running_container_carries_its_labels_and_is_removed_after(self, subject: Subject) -> None:
        marker = {"io.solo-harness.session": "contract", LABEL_ROLE: "agent"}
        seen: list[dict[str, dict[str, str]]] = []

        def look() -> bool:
            seen.append(subject.backend.list_containers(marker))
            return bool(seen[-1]) and len(seen) >= 2

        result = run_container(
            subject.backend, spec(subject.sleep(300)), timeout=240, output=CappedBuffer(), stop_grace=2, cancel=look
        )
        assert result.cancelled
        assert result.container_id in seen[-1]
        wait_for(lambda: result.container_id not in subject.backend.list_containers(marker), timeout=60)

    def test_engine_check(self, subject: Subject) -> None:
        info = subject.backend.check()
        assert info.version and "runc" in info.runtimes

    def test_capacity_is_at_least_one_session_and_says_how_it_was_found(self, subject: Subject) -> None:
        """The queue's default cap (Backend.capacity): never 0, even for a session no node or machine holds."""
        huge = subject.backend.capacity(cpus=4096, memory_bytes=2**50)
        small = subject.backend.capacity(cpus=0.1, memory_bytes=64 * MIB)
        assert huge.sessions == 1 and huge.basis and not huge.fallback
        assert small.sessions >= huge.sessions and small.basis and not small.fallback


ECHO_CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 8787), timeout=30)
s.sendall(b"ping " + sys.argv[1].encode())
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(65536):
    reply += chunk
print("reply:", reply.decode())
"""


class RealEngineContract(EngineContract):
    """What an engine that runs real containers keeps besides: the host's services on the container's loopback."""

    def test_a_host_service_is_reached_on_the_containers_loopback(self, subject: Subject, tmp_path: Path) -> None:
        net = tmp_path / "net"
        net.mkdir(mode=0o755)
        path = net / "echo.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        path.chmod(0o777)
        server.listen(8)
        served: list[bytes] = []

        def serve() -> None:
            conn, _ = server.accept()
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            served.append(data)
            conn.sendall(b"pong " + data[::-1] * 20000)  # about a megabyte back: more than one frame or read
            conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        out = CappedBuffer(cap=4 * MIB)
        echo = spec(["python3", "-c", ECHO_CLIENT, "abc"], services=(Service("echo", 8787, path),))
        result = run_container(subject.backend, echo, timeout=120, output=out)
        server.close()
        assert result.exit_code == 0, out.text()[-500:]
        assert served == [b"ping abc"]  # the host service saw exactly what the container sent
        assert out.text().startswith("reply: pong " + "cba gnip" * 20000)

    def test_without_the_service_the_port_is_closed(self, subject: Subject) -> None:
        # The control: the same client with no service in the spec cannot connect (no route, no relay).
        out = CappedBuffer()
        result = run_container(subject.backend, spec(["python3", "-c", ECHO_CLIENT, "abc"]), timeout=120, output=out)
        assert result.exit_code == 1 and "ConnectionRefusedError" in out.text()
