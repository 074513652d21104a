"""A third engine, as small as an engine can be: lifecycle and inventory only, every call handed to Docker.

It stands for the next engine (Podman, a VM): an engine is a `Backend` (runner/backends/base.py) that keeps the
contract (tests/backends/contract.py, which tests/backends/test_delegating.py runs against it). This one has no
image store, no exec and no samples, as a cluster has none: the harness then builds nothing for it, takes each
checkpoint in a helper container of its own, and the hud shows no sample.
"""

from __future__ import annotations

from dataclasses import replace

from runner.backends.base import Backend, ContainerSpec, EngineInfo, Exit
from runner.base.output import OutputSink


class DelegatingBackend(Backend):
    name = "delegating"

    def __init__(self) -> None:
        from runner.backends.docker import DockerBackend

        self.docker = DockerBackend()

    def check(self) -> EngineInfo:
        return replace(self.docker.check(), name=self.name)

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        return self.docker.submission(spec)

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        return self.docker.start(spec, output)

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
