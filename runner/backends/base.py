"""The engine interface: what the harness asks of a container engine, split by capability.

Every engine is a `Backend`: it has the two capabilities the loop cannot do without,

- `Lifecycle`: reach the engine, start a container from a `ContainerSpec`, wait for it, measure its disk,
  stop it, say how it ended and remove it;
- `Inventory`: find the containers that carry some labels (the harness's own, after a crash) and reap them;

and says how many sessions of a given --cpus and --memory its capacity holds at once (`capacity`: the default
cap of the machine-wide queue, runner.record.queue): this machine's cores and memory for an engine that runs
here, its nodes for a cluster;

and may have more, which the code above asks for with `isinstance`:

- `ImageStore`: images are built and kept by this engine, on this machine (Docker; a cluster pulls its own);
- `Exec`: a command can be run in a running container (the resident helper's checkpoints: runner.loop.resident);
- `Stats`: a running container's CPU, memory and pids can be sampled (the hud);
- `HostMounts`: the engine's mounts are the host's directories themselves (a copy can borrow a shared seed);
- `Overlays`: a mount may be an overlay of a shared read-only directory (a racer's copy over one checkout).

An engine only translates: a `ContainerSpec` (its security posture as data) into what its engine runs, and
the engine's answers back. The policy of a run (deadline, cancel, disk watch, stop grace) lives once above
every engine, in `runner.backends.watchdog`.

The contract every engine keeps (tests/backends/contract.py proves it against each one):

1. `start` returns the container's id once the engine has taken the container. An engine whose start takes
   long (a pod waiting for a node, an image pull, the mounts' transfer: Kubernetes) goes on starting it after
   `start` returned, so that the watchdog's deadline and cancel apply to that too: meanwhile `wait` says
   False, a fault of the start is raised by `wait`, and `stop` gives the start up (`finish` then reports
   `Exit.ran` False). An engine that says it cannot run the command at all reports `Exit.failure`. `remove`
   takes a container whatever became of its start.
2. The command's output (stdout and stderr, in the order written) reaches the `OutputSink` given to `start`,
   all of it by the time `finish` returns. A full sink drops output; it never blocks the container.
3. A read-only mount shows the contents of its host directory as they were at `start`. A writable mount's
   host directory holds what the container left in it once `finish()` has returned — not necessarily
   before: an engine whose mounts are copies (Kubernetes) brings them back in `finish`. So the host reads a
   writable mount only after `finish()` (the agent's report, the checkpoint's bundle).
4. `wait(timeout)` returns within about `timeout`; `stop(grace)` sends SIGTERM and SIGKILL after `grace`;
   `finish` reports the exit code (137 after a SIGKILL) and an OOM kill; `remove` takes the container and
   whatever the engine made for it. Stopping or removing a container that is gone is not an error.
5. A container carries the spec's labels from `start` until `remove`: `Inventory.list_containers` finds it.
6. Faults are the harness's own exceptions, translated at this boundary: `EngineUnavailableError` when the
   engine does not answer, `ImageMissingError` for an image it does not have, `TransientBackendError` for
   what is worth retrying (runner.backends.retry), `BackendError` for the rest.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from runner.base.errors import HarnessError
from runner.base.limits import format_size
from runner.base.output import OutputSink
from runner.record.queue import default_slots, machine_resources

log = logging.getLogger(__name__)

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
    # An overlay (only on an engine with `Overlays`): the container sees `lower`, a directory no container
    # writes, with `source`'s changes laid over it; what the container writes goes to `source` (the kernel's
    # copy-up), never to `lower`. `work` is the overlay's scratch directory, beside `source` on its file system.
    lower: Path | None = None
    work: Path | None = None


# What an overlay's directories may be called: mount(2) takes them in one option, split at commas and colons.
_OVERLAY_PATH = re.compile(r"^/[A-Za-z0-9_./+@=-]*$")


def overlay_path(path: Path) -> bool:
    """Whether `path` may be one of an overlay's directories (`Mount.lower`, `source`, `work`)."""
    return bool(_OVERLAY_PATH.match(str(path)))


@dataclass(frozen=True)
class DiskWatch:
    """Stop the container when `path` (inside it) grows past `limit_bytes`, checked every `interval`."""

    path: str
    limit_bytes: int
    interval: float = 5.0


@dataclass(frozen=True)
class Service:
    """A host service the container reaches as plain TCP on its own loopback: `127.0.0.1:port`
    inside is relayed to the host's Unix socket `socket` (the model gateway, the egress proxy).
    The container gets no route anywhere; each backend decides how the bytes travel."""

    name: str
    port: int
    socket: Path


@dataclass(frozen=True)
class Posture:
    """The hardening of design §4 item 4, as data: every backend must apply all of it or refuse."""

    uid: int
    gid: int
    read_only_root: bool = True
    drop_capabilities: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True
    seccomp: Literal["runtime-default"] = "runtime-default"  # the engine's default profile, never unconfined
    init: bool = True  # a reaper as pid 1: an agent's zombies do not fill --pids
    private_ipc: bool = True

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class Tmpfs:
    """Scratch space in memory at `target`, capped at `size_bytes`, writable, never with setuid programs or
    device files. `exec`: programs must be able to run from it (an engine may allow that without it: Docker
    does not, Kubernetes does). `owner` (uid, gid) and `mode` of its top directory (None: the engine's own)."""

    target: str
    size_bytes: int
    exec: bool = False
    owner: tuple[int, int] | None = None
    mode: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one hardened container (agent or helper)."""

    image: str
    command: list[str]
    posture: Posture
    workdir: str
    cpus: float
    memory_bytes: int
    pids: int
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    tmpfs: tuple[Tmpfs, ...] = ()
    # A harness container has no network: what it reaches of the host comes as `services`, on its own loopback.
    network: Literal["none"] = "none"
    services: tuple[Service, ...] = ()
    runtime: str | None = None  # the engine's name of a runtime (`runsc`: gVisor); None: its default
    log_max_bytes: int = 10 * 1024**2  # what the engine itself keeps of the output (the sink has all of it)
    disk_watch: DiskWatch | None = None
    # The run's deadline, set by the watchdog: a backend whose engine can enforce one as a backstop
    # (Kubernetes' activeDeadlineSeconds) uses it; the watchdog stops the container first.
    deadline_seconds: float | None = None
    # More cores it may use when they are idle (a helper, while the agent is stopped): the cap where the
    # engine has no separate request (Docker), the limit above the request where it has (Kubernetes).
    cpu_burst: float | None = None

    @property
    def user(self) -> str:
        return self.posture.user


@dataclass(frozen=True)
class Exit:
    """How a container ended, as its engine reports it."""

    exit_code: int | None  # 137 after a SIGKILL; None if it never ended
    oom_killed: bool = False
    # The engine's own reason when it could not run the command at all (no node fits, say).
    failure: str | None = None
    # False: stopped while it was starting (a pod still waiting for a node): the command never ran.
    ran: bool = True


@dataclass(frozen=True)
class ContainerResult:
    container_id: str
    exit_code: int | None  # as the engine reports it (137 after a SIGKILL); None if still running at the end
    timed_out: bool
    oom_killed: bool
    duration_seconds: float
    disk_exceeded: bool = False
    cancelled: bool = False  # stopped because `cancel` said so (stop --now)
    failure: str | None = None  # the engine could not run it (see `Exit.failure`)
    ran: bool = True  # False: stopped before the command ran (see `Exit.ran`)


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


@dataclass(frozen=True)
class SessionCapacity:
    """How many sessions an engine holds at once at one session's --cpus and --memory: the default cap of the
    machine-wide queue when no --slots is given."""

    sessions: int  # at least 1
    basis: str  # how it was found, for the log, the plan and the journal ("this machine's 2 cores and 23.5 GiB")
    fallback: bool = False  # the engine could not be asked, and `sessions` is a documented default instead


def local_capacity(*, cpus: float, memory_bytes: int) -> SessionCapacity:
    """The capacity of an engine whose containers run on this machine: its cores and memory (runner.record.queue's
    formula, max(1, min(cores // cpus, memory // session memory)))."""
    cores, memory = machine_resources()
    sessions = default_slots(cpus=cpus, memory_bytes=memory_bytes)
    held = f"{format_size(memory)} memory" if memory is not None else "its memory unknown"
    return SessionCapacity(sessions, f"this machine's {cores} cores and {held}")


class Lifecycle(ABC):
    """Start, wait for, measure, stop, report and remove containers: what every engine does (the watchdog
    drives these; the contract is the module's docstring)."""

    name: str  # the engine's name in messages and the journal: `docker`, `kubernetes`

    @abstractmethod
    def check(self) -> EngineInfo:
        """Reach the engine. Raises EngineUnavailableError when it does not answer."""

    @abstractmethod
    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        """What `start` would submit to the engine for `spec`, as JSON data (for `run --dry-run`)."""

    @abstractmethod
    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        """Create and start a container and begin draining its output into `output`; return its id.
        Raises ImageMissingError or BackendError; the container is removed again on failure."""

    @abstractmethod
    def wait(self, container_id: str, timeout: float) -> bool:
        """True when the container ended within `timeout` seconds (or cannot run at all)."""

    @abstractmethod
    def disk_usage(self, container_id: str, path: str, user: str) -> int | None:
        """Bytes under `path` inside the running container; None when it cannot tell."""

    @abstractmethod
    def stop(self, container_id: str, *, grace: float) -> None:
        """Stop a running container (SIGTERM, then SIGKILL after `grace`). Missing is not an error."""

    @abstractmethod
    def finish(self, container_id: str) -> Exit:
        """After the container ended (or was stopped): how it ended, with its output fully drained and its
        writable mounts' host directories holding what it left there."""

    @abstractmethod
    def remove(self, container_id: str) -> None:
        """Remove a container and whatever the engine made for it. Missing is not an error."""

    def remove_or_leave(self, container_id: str) -> bool:
        """`remove` where a failure must neither hide the error under way nor end a clean-up: the container is
        left, and a warning says so (it keeps its session's labels: `resume` and `harness gc` remove it)."""
        try:
            self.remove(container_id)
        except HarnessError as exc:
            log.warning("container %s left behind (resume or 'harness gc' removes it): %s", container_id[:12],
                        exc.message)  # fmt: skip
            return False
        return True


class Inventory(ABC):
    """Find the harness's containers by label, running or not (`gc`, `resume`, `discard`, the hud)."""

    @abstractmethod
    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        """The containers (running or not) carrying all `labels`: id -> all their labels."""


class Backend(Lifecycle, Inventory, ABC):
    """An engine: lifecycle and inventory, and whichever of `ImageStore`, `Exec` and `Stats` it also is.
    Engine errors are translated into HarnessErrors."""

    @abstractmethod
    def capacity(self, *, cpus: float, memory_bytes: int) -> SessionCapacity:
        """How many sessions whose containers ask `cpus` and `memory_bytes` the engine holds at once, at least 1
        (its total, not what is free now). Raises nothing: an engine it cannot ask (a cluster that does not let
        this user list its nodes) answers a documented default, `fallback` set and its `basis` saying why. Asked
        once per plan and once per drive of a session, never per look at the queue."""

    def reap(self, labels: dict[str, str]) -> list[str]:
        """Force-remove every container carrying all `labels`; return their ids."""
        return [container_id for container_id in self.list_containers(labels) if self.remove_or_leave(container_id)]


class ImageStore(ABC):
    """Images built and kept by the engine on this machine (Docker). An engine without it runs images that
    something else holds (a cluster pulls them): the harness builds and derives nothing for it."""

    @abstractmethod
    def image_exists(self, image: str) -> bool:
        """True when `image` is present locally. Raises BackendError on engine faults."""

    @abstractmethod
    def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image, None when the image or the label is absent."""

    @abstractmethod
    def image_id(self, image: str) -> str | None:
        """The engine's id of a local image (its content, e.g. `sha256:...`), None when it is absent.
        Raises BackendError on engine faults."""

    @abstractmethod
    def build_image(
        self, *, context: Path, tag: str, labels: dict[str, str], dockerfile: str | None = None,
        buildargs: dict[str, str] | None = None, target: str | None = None,
    ) -> None:  # fmt: skip
        """Build `tag` from the directory `context`, nothing pulled: with `dockerfile` (a path inside
        `context`, or an absolute one outside it; default `Dockerfile`), build arguments and the stage
        `target`. Raises ImageMissingError when the build fails, with the build's last output line."""

    @abstractmethod
    def prune_images(self, labels: dict[str, str]) -> list[str]:
        """Remove dangling (untagged, superseded) images carrying all `labels`; return their ids."""


class Exec(ABC):
    """A command run in a running container: a helper can stay for a whole run and take each checkpoint as an
    exec (runner.loop.resident). An engine whose mounts are copies that travel with each container
    (Kubernetes) has no use for it."""

    @abstractmethod
    def exec(
        self, container_id: str, command: list[str], *, user: str, env: dict[str, str], output: OutputSink,
        timeout: float,
    ) -> int | None:  # fmt: skip
        """Run `command` in the running container, its output (stdout and stderr as written) into `output`;
        its exit code, or None when it did not end within `timeout` (the caller removes the container).
        Raises BackendError when the container is gone or the engine refuses."""


class HostMounts(ABC):  # noqa: B024 - a capability without a method: what the engine's mounts are
    """The engine's mounts are the host's directories themselves (bind mounts), not copies: a read-only mount
    costs nothing whatever its size, and every container sees the same files. A repository's shared seed
    (runner.loop.seed) is used only on such an engine; Kubernetes, whose mounts travel with each pod, makes
    each copy by a full clone instead."""


class Overlays(ABC):
    """Mounts that are overlays (`Mount.lower`): the engine mounts, for each container, `lower` read-only
    with the mount's own directory over it, so that many copies share one checkout and each writes only its
    changes. The engine may keep something for an overlay across containers, with the labels of the container
    that first mounted it but its role (Docker: a volume); `remove_overlays` lets it go once the copy is deleted."""

    @abstractmethod
    def overlays(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        """What the engine keeps for the overlays carrying all `labels`: name -> all their labels."""

    @abstractmethod
    def remove_overlays(self, labels: dict[str, str]) -> list[str]:
        """Remove what the engine keeps for the overlays carrying all `labels` (no container may use them any
        more); their names. Raises BackendError."""


class Stats(ABC):
    """Samples of a running container's resource use (the hud)."""

    @abstractmethod
    def stats(self, container_id: str) -> ContainerStats | None:
        """One sample of a container's CPU, memory and pids against its limits, without streaming;
        None when the container is gone or not running. Raises BackendError for engine faults."""
