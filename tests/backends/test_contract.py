"""One contract, every backend: what the supervisor relies on, proved against each real engine.

The watchdog (deadline, cancel, disk watch) runs above the backends; these tests drive it through
each backend's start/wait/stop/finish/remove, so a backend that cannot stop, measure or report an
OOM fails here. The fake takes part only so the loop's unit tests can trust it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from runner.backends.base import LABEL_ROLE, Backend, ContainerSpec, DiskWatch, Mount, Service
from runner.backends.fake import FakeBackend, FakeRun, mount_source
from runner.backends.watchdog import run_container
from runner.base.errors import ImageMissingError
from runner.base.output import CappedBuffer
from runner.record.models import KubernetesBackendConfig, Limits
from runner.sandbox.container import hardened_spec, labels
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import wait_for

MIB = 1024**2


@dataclass
class Subject:
    backend: Backend
    echo_exit: Callable[[str, int], list[str]]
    sleep: Callable[[float], list[str]]
    oom: list[str]  # allocates far past a 64 MiB cap
    flood: Callable[[int], list[str]]  # writes N MiB to stdout, then exits 0
    fill: Callable[[str, int], list[str]]  # writes N MiB under a path, then sleeps
    leave_container: Callable[[dict[str, str]], None]
    posture_applied: Callable[[dict[str, Any]], bool]  # the submission carries design §4's hardening
    # copies GIVEN/in.txt to KEPT/copy.txt, writes KEPT/sub/new.txt, removes KEPT/old.txt
    use_mounts: Callable[[str, str], list[str]]
    # the spec made one whose start does not end (a pod no node takes); None: this engine starts at once
    pending: Callable[[ContainerSpec], ContainerSpec] | None = None


def _docker_leave(extra: dict[str, str]) -> None:
    label_args = [arg for k, v in extra.items() for arg in ("--label", f"{k}={v}")]
    subprocess.run(
        ["docker", "create", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}", *label_args,
         "--network", "none", "harness-base:latest", "true"],
        check=True, capture_output=True,
    )  # fmt: skip


def _docker_posture(submitted: dict[str, Any]) -> bool:
    return (
        submitted["cap_drop"] == ["ALL"]
        and submitted["read_only"] is True
        and submitted["user"] == "10001:10001"
        and submitted["security_opt"] == ["no-new-privileges"]
        and submitted["network_mode"] == "none"
        and submitted["privileged"] is False
    )


def _fake_subject() -> Subject:
    fake = FakeBackend()

    def behaviour(spec: ContainerSpec) -> FakeRun:
        cmd = spec.command
        if cmd[0] == "fake:oom":
            return FakeRun(exit_code=137, oom_killed=True)
        if cmd[0] == "fake:flood":
            return FakeRun(output=b"x" * int(cmd[1]) * MIB)
        if cmd[0] == "fake:fill":
            return FakeRun(hang=True, disk_bytes=int(cmd[2]) * MIB)
        if cmd[0] == "fake:pending":
            return FakeRun(pending=True)
        if cmd[0] == "fake:mounts":
            given, kept = mount_source(spec, cmd[1]), mount_source(spec, cmd[2])
            (kept / "copy.txt").write_bytes((given / "in.txt").read_bytes())
            (kept / "sub").mkdir()
            (kept / "sub" / "new.txt").write_text("made inside\n")
            (kept / "old.txt").unlink()
            return FakeRun()
        raise AssertionError(cmd)

    fake.behaviour = behaviour
    return Subject(
        fake,
        lambda text, code: ["fake:echo-exit", text, str(code)],
        lambda seconds: ["fake:sleep", str(seconds)],
        ["fake:oom"],
        lambda mib: ["fake:flood", str(mib)],
        lambda path, mib: ["fake:fill", path, str(mib)],
        lambda extra: fake.existing.__setitem__(f"left{len(fake.existing)}", dict(extra)),
        lambda submitted: submitted["user"] == "10001:10001",
        lambda given, kept: ["fake:mounts", given, kept],
        lambda pending: replace(pending, command=["fake:pending"]),
    )


SHELL_OOM = ["sh", "-c", "head -c 1000m /dev/zero | tail -c 900m > /dev/null"]


def _shell(subject_backend: Backend, leave: Callable[[dict[str, str]], None], posture: Callable[..., bool]) -> Subject:
    return Subject(
        subject_backend,
        lambda text, code: ["sh", "-c", f"echo {text}; exit {code}"],
        lambda seconds: ["sleep", str(seconds)],
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


def _k8s_posture(job: dict[str, Any]) -> bool:
    pod = job["spec"]["template"]["spec"]
    hardened = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "privileged": False,
    }  # fmt: skip
    return (
        job["apiVersion"] == "batch/v1"
        and job["spec"]["backoffLimit"] == 0
        and job["spec"]["activeDeadlineSeconds"] > 0
        and pod["restartPolicy"] == "Never"
        and pod["automountServiceAccountToken"] is False
        and pod["securityContext"]
        == {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}
        and all(c["securityContext"] == hardened for c in pod["containers"])
        and all("hostPath" not in v for v in pod["volumes"])
        and pod["containers"][0]["resources"]["limits"] == {"cpu": "1000m", "memory": str(64 * MIB)}
    )  # fmt: skip


def _k8s_subject(config: KubernetesBackendConfig) -> Subject:
    from kubernetes import client

    from runner.backends.kubernetes.engine import KubernetesBackend

    backend = KubernetesBackend(config.model_copy(update={"pending_timeout_seconds": 600}))

    def leave(extra: dict[str, str]) -> None:
        job = client.V1Job(
            metadata=client.V1ObjectMeta(name=f"left-{len(backend.list_containers({}))}", labels=extra),
            spec=client.V1JobSpec(
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never", automount_service_account_token=False,
                        containers=[client.V1Container(name="c", image="harness-base:latest", command=["true"],
                                                       image_pull_policy="Never")],
                    )
                )
            ),
        )  # fmt: skip
        client.BatchV1Api(backend.api).create_namespaced_job(config.namespace, job)

    subject = _shell(backend, leave, _k8s_posture)
    # More cores than the lab's node has: the pod stays Pending (its pending timeout is past the tests' times).
    subject.pending = lambda pending: replace(pending, cpus=64)
    return subject


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("kubernetes", marks=pytest.mark.kubernetes),
    ]
)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        yield _fake_subject()
    elif request.param == "docker":
        from runner.backends.docker import DockerBackend

        yield _shell(DockerBackend(), _docker_leave, _docker_posture)
    else:
        yield _k8s_subject(request.getfixturevalue("k8s_config"))


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


def test_output_and_exit_code(subject: Subject) -> None:
    out = CappedBuffer()
    result = run_container(subject.backend, spec(subject.echo_exit("hello-contract", 3)), timeout=120, output=out)
    assert result.exit_code == 3 and not result.timed_out and not result.oom_killed and result.failure is None
    assert "hello-contract" in out.text()
    assert result.container_id


def test_the_deadline_stops_a_container_past_its_timeout(subject: Subject) -> None:
    result = run_container(subject.backend, spec(subject.sleep(300)), timeout=3, output=CappedBuffer(), stop_grace=2)
    assert result.timed_out and not result.cancelled and result.exit_code in (137, 143)  # SIGKILL, SIGTERM
    assert result.duration_seconds < 120


def test_cancel_stops_a_running_container(subject: Subject) -> None:
    asked: list[float] = []

    def cancel() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 2  # the second look: the container has been running a while

    result = run_container(
        subject.backend, spec(subject.sleep(300)), timeout=240, output=CappedBuffer(), stop_grace=2, cancel=cancel
    )
    assert result.cancelled and not result.timed_out and result.exit_code in (137, 143)


def test_the_deadline_and_cancel_apply_while_a_container_starts(subject: Subject) -> None:
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


def test_an_oom_kill_is_reported(subject: Subject) -> None:
    out = CappedBuffer()
    result = run_container(subject.backend, spec(subject.oom), timeout=120, output=out)
    assert result.oom_killed and result.exit_code != 0, (result, out.text())


def test_output_past_the_cap_is_dropped_without_blocking_the_container(subject: Subject) -> None:
    out = CappedBuffer(cap=64 * 1024)
    result = run_container(subject.backend, spec(subject.flood(20)), timeout=120, output=out)
    assert result.exit_code == 0 and not result.timed_out  # never blocked by the capped reader
    assert len(out.data) == 64 * 1024 and out.text().startswith("x")


def test_the_disk_watch_stops_a_container_that_fills_its_path(subject: Subject) -> None:
    watched = spec(subject.fill("/tmp", 40), disk_watch=DiskWatch("/tmp", 8 * MIB, interval=0.5))
    result = run_container(subject.backend, watched, timeout=240, output=CappedBuffer(), stop_grace=2)
    assert result.disk_exceeded and not result.timed_out


def test_writable_mounts_are_on_the_host_after_finish(subject: Subject, tmp_path: Path) -> None:
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


def test_the_posture_is_in_what_the_backend_submits(subject: Subject) -> None:
    submitted = subject.backend.submission(spec(subject.echo_exit("x", 0)))
    assert subject.posture_applied(submitted), submitted


def test_a_missing_image_is_a_translated_error(subject: Subject) -> None:
    with pytest.raises(ImageMissingError):
        run_container(
            subject.backend, spec(subject.echo_exit("x", 0), image="harness-test-absent:0"), timeout=60,
            output=CappedBuffer(),
        )  # fmt: skip


def test_containers_are_listed_and_reaped_by_label(subject: Subject) -> None:
    marker = {"io.solo-harness.session": "contract-reap", "io.solo-harness.managed": "1"}
    subject.leave_container(marker)
    found = subject.backend.list_containers(marker)
    assert len(found) == 1
    assert next(iter(found.values()))["io.solo-harness.session"] == "contract-reap"
    assert subject.backend.reap(marker) == list(found)
    assert subject.backend.list_containers(marker) == {}


def test_a_running_container_carries_its_labels_and_is_removed_after(subject: Subject) -> None:
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


def test_engine_check(subject: Subject) -> None:
    info = subject.backend.check()
    assert info.version and "runc" in info.runtimes


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


@pytest.fixture(
    params=[pytest.param("docker", marks=pytest.mark.docker), pytest.param("kubernetes", marks=pytest.mark.kubernetes)]
)
def engine(request: pytest.FixtureRequest) -> Backend:
    if request.param == "docker":
        from runner.backends.docker import DockerBackend

        return DockerBackend()
    from runner.backends.kubernetes.engine import KubernetesBackend

    return KubernetesBackend(request.getfixturevalue("k8s_config"))


def test_a_host_service_is_reached_on_the_containers_loopback(engine: Backend, tmp_path: Path) -> None:
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
    result = run_container(engine, echo, timeout=120, output=out)
    server.close()
    assert result.exit_code == 0, out.text()[-500:]
    assert served == [b"ping abc"]  # the host service saw exactly what the container sent
    assert out.text().startswith("reply: pong " + "cba gnip" * 20000)


def test_without_the_service_the_port_is_closed(engine: Backend) -> None:
    # The control: the same client with no service in the spec cannot connect (no route, no relay).
    out = CappedBuffer()
    result = run_container(engine, spec(["python3", "-c", ECHO_CLIENT, "abc"]), timeout=120, output=out)
    assert result.exit_code == 1 and "ConnectionRefusedError" in out.text()
