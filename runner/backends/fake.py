"""A fake backend for the supervisor's unit tests and the backend contract suite.

Commands starting with "fake:" are interpreted here instead of run; an agent's behaviour is a
callable that gets the spec (with its host mount paths) and returns how the container ended.
Helper containers answer as the checkpoint helper would: nothing new to harvest.
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
    ContainerResult,
    ContainerSpec,
    ContainerStats,
    EngineInfo,
)
from runner.errors import ImageMissingError
from runner.output import OutputSink
from runner.sandbox import MERGE_OUTPUT


@dataclass
class FakeRun:
    exit_code: int = 0
    output: bytes = b""
    timed_out: bool = False
    oom_killed: bool = False
    disk_exceeded: bool = False
    cancelled: bool = False


Behaviour = Callable[[ContainerSpec], FakeRun]


def mount_source(spec: ContainerSpec, target: str) -> Path:
    return next(m.source for m in spec.mounts if m.target == target)


@dataclass
class FakeBackend(Backend):
    behaviour: Behaviour | None = None
    images: set[str] = field(default_factory=lambda: {"harness-base:latest", "debian:bookworm-slim"})
    runs: list[ContainerSpec] = field(default_factory=list)
    existing: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> labels, for list/reap
    check_exit: int = 0  # what a --check container exits with
    samples: dict[str, ContainerStats] = field(default_factory=dict)  # id -> what `stats` answers
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    name = "fake"

    def check(self) -> EngineInfo:
        return EngineInfo(name="fake", version="0", runtimes=("runc",))

    def image_exists(self, image: str) -> bool:
        return image in self.images

    def image_label(self, image: str, label: str) -> str | None:
        return None

    def build_image(self, *, context: Path, tag: str, labels: dict[str, str]) -> None:
        if not (context / "Dockerfile").is_file():
            raise ImageMissingError(f"no Dockerfile in {context}")
        self.images.add(tag)

    def run(
        self,
        spec: ContainerSpec,
        *,
        timeout: float,
        output: OutputSink,
        stop_grace: float = 10.0,
        cancel: Callable[[], bool] | None = None,
    ) -> ContainerResult:
        if spec.image not in self.images:
            raise ImageMissingError(f"image {spec.image} not found")
        self.runs.append(spec)
        cid = f"fake{next(self._ids):06d}"
        started = time.monotonic()
        result = self._interpret(spec, timeout)
        output.write(result.output)
        return ContainerResult(
            container_id=cid,
            exit_code=None if result.timed_out else result.exit_code,
            timed_out=result.timed_out,
            oom_killed=result.oom_killed,
            duration_seconds=time.monotonic() - started,
            disk_exceeded=result.disk_exceeded,
            cancelled=result.cancelled or (cancel is not None and cancel()),
        )

    def _interpret(self, spec: ContainerSpec, timeout: float) -> FakeRun:
        if spec.labels.get(LABEL_ROLE) == "check":
            return FakeRun(exit_code=self.check_exit, output=f"check exited {self.check_exit}\n".encode())
        if spec.labels.get(LABEL_ROLE) == "helper":
            last = spec.env.get("HARNESS_LAST", "0" * 40)
            return FakeRun(output=f"harness-export none {last}\n".encode())
        cmd = spec.command
        if tuple(cmd[: len(MERGE_OUTPUT)]) == MERGE_OUTPUT:
            cmd = cmd[len(MERGE_OUTPUT) :]
        if cmd[:1] == ["fake:echo-exit"]:
            return FakeRun(exit_code=int(cmd[2]), output=cmd[1].encode() + b"\n")
        if cmd[:1] == ["fake:sleep"]:
            seconds = float(cmd[1])
            if seconds > timeout:
                return FakeRun(exit_code=137, timed_out=True)
            time.sleep(seconds)
            return FakeRun()
        if self.behaviour is None:
            raise AssertionError(f"the fake backend has no behaviour for {cmd}")
        return self.behaviour(spec)

    def stop(self, container_id: str, *, grace: float) -> None:
        self.existing.pop(container_id, None)

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        return {cid: dict(have) for cid, have in self.existing.items() if labels.items() <= have.items()}

    def stats(self, container_id: str) -> ContainerStats | None:
        return self.samples.get(container_id) if container_id in self.existing else None

    def reap(self, labels: dict[str, str]) -> list[str]:
        ids = list(self.list_containers(labels))
        for cid in ids:
            del self.existing[cid]
        return ids

    def prune_images(self, labels: dict[str, str]) -> list[str]:
        return []
