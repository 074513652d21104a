"""The backend interface: container lifecycle and execution, independent of the engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from runner.output import OutputSink

LABEL_PREFIX = "io.solo-harness"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_SESSION = f"{LABEL_PREFIX}.session"
LABEL_REPO = f"{LABEL_PREFIX}.repo"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
LABEL_HOME = f"{LABEL_PREFIX}.home"  # which harness home (user, HARNESS_HOME) owns the container
LABEL_CONTEXT = f"{LABEL_PREFIX}.context-digest"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class DiskWatch:
    """Stop the container when `path` (inside it) grows past `limit_bytes`, checked every `interval`."""

    path: str
    limit_bytes: int
    interval: float = 5.0


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one hardened container (agent or helper)."""

    image: str
    command: list[str]
    user: str
    workdir: str
    cpus: float
    memory_bytes: int
    pids: int
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)
    network: str = "none"
    runtime: str | None = None
    log_max_size: str = "10m"
    disk_watch: DiskWatch | None = None


@dataclass(frozen=True)
class ContainerResult:
    container_id: str
    exit_code: int | None  # as the engine reports it (137 after a SIGKILL); None if still running at the end
    timed_out: bool
    oom_killed: bool
    duration_seconds: float
    disk_exceeded: bool = False
    cancelled: bool = False  # stopped because `cancel` said so (stop --now)


@dataclass(frozen=True)
class ContainerStats:
    """One sample of a running container's resource use, with its limits (None: no limit set)."""

    container_id: str
    cpu_seconds: float  # CPU time used since the container started
    cpus_limit: float | None
    memory_bytes: int  # in use, without the reclaimable page cache (as `docker stats` counts it)
    memory_limit_bytes: int | None
    pids: int | None
    pids_limit: int | None
    started_at: datetime | None
    read_at: datetime  # when the engine took the sample


@dataclass(frozen=True)
class EngineInfo:
    name: str
    version: str
    runtimes: tuple[str, ...]


class Backend(ABC):
    """Create, run, stop and reap containers. Engine errors are translated into HarnessErrors."""

    name: str

    @abstractmethod
    def check(self) -> EngineInfo:
        """Reach the engine. Raises DockerUnavailableError when it does not answer."""

    @abstractmethod
    def image_exists(self, image: str) -> bool:
        """True when `image` is present locally. Raises BackendError on engine faults."""

    @abstractmethod
    def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image, None when the image or the label is absent."""

    @abstractmethod
    def build_image(self, *, context: Path, tag: str, labels: dict[str, str]) -> None:
        """Build `tag` from the directory `context`. Raises ImageMissingError when the build fails."""

    @abstractmethod
    def run(
        self,
        spec: ContainerSpec,
        *,
        timeout: float,
        output: OutputSink,
        stop_grace: float = 10.0,
        cancel: Callable[[], bool] | None = None,
    ) -> ContainerResult:
        """Create and start a container, drain its output into `output`, wait at most `timeout`
        seconds, and stop it early (SIGTERM, then SIGKILL after `stop_grace`) when `cancel()` turns
        true or its disk watch fires; record how it ended and remove it. Raises BackendError for
        engine faults; what the command did is in the result."""

    @abstractmethod
    def stop(self, container_id: str, *, grace: float) -> None:
        """Stop a running container (SIGTERM, then SIGKILL after `grace`). Missing is not an error."""

    @abstractmethod
    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        """The containers (running or not) carrying all `labels`: id -> all their labels."""

    @abstractmethod
    def stats(self, container_id: str) -> ContainerStats | None:
        """One sample of a container's CPU, memory and pids against its limits, without streaming;
        None when the container is gone or not running. Raises BackendError for engine faults."""

    @abstractmethod
    def reap(self, labels: dict[str, str]) -> list[str]:
        """Force-remove every container carrying all `labels`; return their ids."""

    @abstractmethod
    def prune_images(self, labels: dict[str, str]) -> list[str]:
        """Remove dangling (untagged, superseded) images carrying all `labels`; return their ids."""
