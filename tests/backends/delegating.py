"""A third engine, as small as an engine can be: lifecycle and inventory only, every call handed to Docker.

It stands for the next engine (Podman, a VM), which would be a folder of runner/backends/ with these two
classes in it and one line in its registry (runner.backends.ENGINES): its configuration (`DelegatingConfig`: its
`type`, and an option of its own, which `run` then takes from a `[delegating]` table of the settings) and the
engine, a `Backend` (runner/backends/base.py) that keeps the contract (tests/backends/contract.py). Nothing else
of the harness changes for it: tests/backends/test_delegating.py registers it, runs the contract suite against
it and a session on it.

It has no image store, no exec and no samples, as a cluster has none: the harness then builds nothing for it,
takes each checkpoint in a helper container of its own, and the hud shows no sample.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

from runner.backends.base import Backend, ContainerSpec, EngineInfo, Exit, SessionCapacity
from runner.backends.config import EngineConfig
from runner.base.output import OutputSink


class DelegatingConfig(EngineConfig):
    """Containers on the local Docker engine, through an engine of its own (a test's)."""

    type: Literal["delegating"] = Field(default="delegating", description="Always `delegating`.")
    shift: str | None = Field(default=None, description="Put on every container as the label `io.example.shift`.")


class DelegatingBackend(Backend):
    name = "delegating"

    def __init__(self, config: DelegatingConfig | None = None) -> None:
        from runner.backends.docker.engine import DockerBackend

        self.config = config or DelegatingConfig()
        self.docker = DockerBackend()

    def _own(self, spec: ContainerSpec) -> ContainerSpec:
        shift = {"io.example.shift": self.config.shift} if self.config.shift else {}
        return replace(spec, labels={**spec.labels, **shift})

    def check(self) -> EngineInfo:
        return replace(self.docker.check(), name=self.name)

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        return self.docker.submission(self._own(spec))

    def capacity(self, *, cpus: float, memory_bytes: int) -> SessionCapacity:
        return self.docker.capacity(cpus=cpus, memory_bytes=memory_bytes)

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        return self.docker.start(self._own(spec), output)

    def wait(self, container_id: str, timeout: float) -> bool:
        return self.docker.wait(container_id, timeout)

    def disk_usage(self, container_id: str, path: str, user: str) -> int | None:
        return self.docker.disk_usage(container_id, path, user)

    def stop(self, container_id: str, *, grace: float) -> None:
        self.docker.stop(container_id, grace=grace)

    def finish(self, container_id: str) -> Exit:
        return self.docker.finish(container_id)

    def remove(self, container_id: str) -> None:
        self.docker.remove(container_id)

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        return self.docker.list_containers(labels)
