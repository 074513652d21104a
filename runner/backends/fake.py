"""A fake engine for the unit tests of the layers above (never for proving an engine's behaviour: the contract
suite does that, tests/backends/).

It runs nothing. Commands starting with "fake:" are interpreted here; any other container's behaviour is a
callable that gets the spec (with its host mount paths) and returns how the container ends, and an exec's
likewise gets the command and its environment. A hanging one runs until the watchdog stops it. The fake knows
nothing of what the harness runs in its containers (the copy's helpers answer as the tests make them), but for
the `--check` container, which exits `check_exit`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.backends.base import (
    LABEL_ROLE,
    Backend,
    ContainerSpec,
    ContainerStats,
    EngineInfo,
    Exec,
    Exit,
    ImageStore,
    SessionCapacity,
    Stats,
    local_capacity,
)
from runner.base.errors import BackendError, ImageMissingError
from runner.base.layout import MERGE_OUTPUT
from runner.base.output import OutputSink


@dataclass
class FakeRun:
    exit_code: int = 0
    output: bytes = b""
    seconds: float = 0.0  # how long it runs before it exits by itself
    hang: bool = False  # runs until stopped (then exits 137)
    oom_killed: bool = False
    disk_bytes: int | None = None  # what a disk measure inside it finds
    failure: str | None = None  # the engine could not run it
    pending: bool = False  # its start never ends (a pod no node takes yet): until stopped, and then it never ran


@dataclass
class _Container:
    spec: ContainerSpec
    run: FakeRun
    ends_at: float
    exit_code: int | None = None


@dataclass(frozen=True)
class FakeBuild:
    """One `build_image` call: what a test can check about it."""

    tag: str
    dockerfile: str  # the Dockerfile's text
    labels: dict[str, str]
    buildargs: dict[str, str]
    target: str | None


WAIT_SLICE = 0.05  # a hanging fake answers waits this often, so cancel checks stay quick


Behaviour = Callable[[ContainerSpec], FakeRun]
ExecBehaviour = Callable[[list[str], dict[str, str]], FakeRun]  # an exec's command and environment


def mount_source(spec: ContainerSpec, target: str) -> Path:
    return next(m.source for m in spec.mounts if m.target == target)


@dataclass
class FakeCluster(Backend):
    """An engine with lifecycle and inventory only, as a cluster is: something else holds its images (`images`:
    what it can run), it has no exec and no samples."""

    behaviour: Behaviour | None = None
    images: set[str] = field(default_factory=lambda: {"harness-base:latest", "debian:bookworm-slim"})
    runs: list[ContainerSpec] = field(default_factory=list)
    existing: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> labels, for list/reap
    check_exit: int = 0  # what a --check container exits with
    holds: SessionCapacity | None = None  # what `capacity` answers; None: this machine's, as Docker's
    capacity_asked: int = 0  # how often `capacity` was asked
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _containers: dict[str, _Container] = field(default_factory=dict)
    name = "fake"

    def check(self) -> EngineInfo:
        return EngineInfo(name="fake", version="0", runtimes=("runc",))

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        return {"image": spec.image, "command": spec.command, "user": spec.user}

    def capacity(self, *, cpus: float, memory_bytes: int) -> SessionCapacity:
        self.capacity_asked += 1
        return self.holds or local_capacity(cpus=cpus, memory_bytes=memory_bytes)

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        if spec.image not in self.images:
            raise ImageMissingError(f"image {spec.image} not found")
        self.runs.append(spec)
        cid = f"fake{next(self._ids):06d}"
        run = self._interpret(spec)
        output.write(run.output)
        ends_at = float("inf") if run.hang or run.pending else time.monotonic() + run.seconds
        self._containers[cid] = _Container(spec, run, ends_at)
        self.existing[cid] = dict(spec.labels)
        return cid

    def wait(self, container_id: str, timeout: float) -> bool:
        box = self._containers[container_id]
        if box.run.failure is not None:
            return True
        left = box.ends_at - time.monotonic()
        if left > timeout or box.run.hang:
            time.sleep(min(timeout, WAIT_SLICE))
            return False
        time.sleep(max(0.0, left))
        return True

    def disk_usage(self, container_id: str, path: str, user: str) -> int | None:
        return self._containers[container_id].run.disk_bytes

    def finish(self, container_id: str) -> Exit:
        box = self._containers[container_id]
        if box.run.failure is not None:
            return Exit(exit_code=None, failure=box.run.failure)
        if box.run.pending:
            return Exit(exit_code=None, ran=False)
        if box.exit_code is None and time.monotonic() >= box.ends_at:
            box.exit_code = box.run.exit_code
        return Exit(exit_code=box.exit_code, oom_killed=box.run.oom_killed)

    def remove(self, container_id: str) -> None:
        self._containers.pop(container_id, None)
        self.existing.pop(container_id, None)

    def _interpret(self, spec: ContainerSpec) -> FakeRun:
        if spec.labels.get(LABEL_ROLE) == "check":
            return FakeRun(exit_code=self.check_exit, output=f"check exited {self.check_exit}\n".encode())
        cmd = spec.command
        if tuple(cmd[: len(MERGE_OUTPUT)]) == MERGE_OUTPUT:
            cmd = cmd[len(MERGE_OUTPUT) :]
        if cmd[:1] == ["fake:echo-exit"]:
            return FakeRun(exit_code=int(cmd[2]), output=cmd[1].encode() + b"\n")
        if cmd[:1] == ["fake:sleep"]:
            return FakeRun(seconds=float(cmd[1]))
        if self.behaviour is None:
            raise AssertionError(f"the fake backend has no behaviour for {cmd}")
        return self.behaviour(spec)

    def stop(self, container_id: str, *, grace: float) -> None:
        box = self._containers.get(container_id)
        if box is not None and box.run.pending:
            box.ends_at = time.monotonic()  # its start is given up
        elif box is not None and box.exit_code is None and time.monotonic() < box.ends_at:
            box.exit_code, box.ends_at = 137, time.monotonic()  # SIGTERM ignored, then SIGKILL

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        return {cid: dict(have) for cid, have in self.existing.items() if labels.items() <= have.items()}


@dataclass
class FakeBackend(FakeCluster, ImageStore, Exec, Stats):
    """Every capability, as the local engine has them: images built here, exec, samples."""

    samples: dict[str, ContainerStats] = field(default_factory=dict)  # id -> what `stats` answers
    execs: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)  # id, command, env
    on_exec: ExecBehaviour = lambda command, env: FakeRun()  # how an exec ends (`hang`: never, by its timeout)
    image_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # tag -> labels (set by builds)
    image_ids: dict[str, str] = field(default_factory=dict)  # tag -> id (a new one per build)
    builds: list[FakeBuild] = field(default_factory=list)  # every build_image call, in order

    def image_exists(self, image: str) -> bool:
        return image in self.images

    def image_label(self, image: str, label: str) -> str | None:
        return self.image_labels.get(image, {}).get(label) if image in self.images else None

    def image_id(self, image: str) -> str | None:
        if image not in self.images:
            return None
        return self.image_ids.setdefault(image, f"sha256:{next(self._ids):064x}")

    def build_image(
        self, *, context: Path, tag: str, labels: dict[str, str], dockerfile: str | None = None,
        buildargs: dict[str, str] | None = None, target: str | None = None,
    ) -> None:  # fmt: skip
        given = Path(dockerfile or "Dockerfile")
        path = given if given.is_absolute() else context / given
        if not path.is_file():
            raise ImageMissingError(f"no Dockerfile in {context}")
        self.builds.append(FakeBuild(tag=tag, dockerfile=path.read_text(), labels=dict(labels),
                                     buildargs=dict(buildargs or {}), target=target))  # fmt: skip
        self.images.add(tag)
        self.image_labels[tag] = dict(labels)
        self.image_ids[tag] = f"sha256:{next(self._ids):064x}"  # a build makes a new image

    def prune_images(self, labels: dict[str, str]) -> list[str]:
        return []

    def exec(
        self, container_id: str, command: list[str], *, user: str, env: dict[str, str], output: OutputSink,
        timeout: float,
    ) -> int | None:  # fmt: skip
        if container_id not in self._containers:
            raise BackendError(f"no such container: {container_id}")
        self.execs.append((container_id, command, env))
        run = self.on_exec(command, env)
        output.write(run.output)
        return None if run.hang else run.exit_code

    def stats(self, container_id: str) -> ContainerStats | None:
        return self.samples.get(container_id) if container_id in self.existing else None
