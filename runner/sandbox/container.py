"""The one recipe for a hardened container (design §4 item 4), for agents and helpers alike."""

from __future__ import annotations

from pathlib import Path

from runner.backends.base import (
    LABEL_HOME,
    LABEL_MANAGED,
    LABEL_REPO,
    LABEL_ROLE,
    LABEL_SESSION,
    ContainerSpec,
    DiskWatch,
    Mount,
    Posture,
    Service,
    Tmpfs,
)
from runner.base.layout import AGENT_UID, HOME, WORKSPACE
from runner.base.paths import home_key
from runner.base.seams import harness_env
from runner.record.models import Limits

POSTURE = Posture(uid=AGENT_UID, gid=AGENT_UID)  # every container of the harness, agent or helper


EXTRA_LABELS_ENV = "HARNESS_CONTAINER_LABELS"  # "k=v,k2=v2": the user's own labels (accounting, reaping)


def session_labels(session: str, repo_key: str, role: str | None = None) -> dict[str, str]:
    """The labels that tell this harness home's containers of one session (of one role, when given): what
    `resume` and `discard` reap, what `hud` samples, and part of every container's labels."""
    found = {LABEL_HOME: home_key(), LABEL_SESSION: session, LABEL_REPO: repo_key}
    return found if role is None else {**found, LABEL_ROLE: role}


def labels(session: str, repo_key: str, role: str) -> dict[str, str]:
    """Every label of a container of the session: the user's own, the harness's mark, the session's."""
    extra = dict(item.split("=", 1) for item in harness_env().container_labels.split(",") if "=" in item)
    return {**extra, LABEL_MANAGED: "1", **session_labels(session, repo_key, role)}


def hardened_spec(
    *,
    image: str,
    command: list[str],
    limits: Limits,
    mounts: tuple[Mount, ...],
    labels: dict[str, str],
    env: dict[str, str] | None = None,
    runtime: str | None = None,
    workdir: str = WORKSPACE,
    tmp_bytes: int = 512 * 1024**2,
    disk_watch: DiskWatch | None = None,
    services: tuple[Service, ...] = (),
    cpu_burst: float | None = None,
) -> ContainerSpec:
    return ContainerSpec(
        image=image,
        command=command,
        posture=POSTURE,
        workdir=workdir,
        cpus=limits.cpus,
        cpu_burst=cpu_burst,
        memory_bytes=limits.memory_bytes,
        pids=host_task_limit(limits.pids, runtime),
        env={"HOME": HOME, "TMPDIR": "/tmp", "LANG": "C.UTF-8", **(env or {})},
        mounts=mounts,
        labels=labels,
        # Writable scratch space lives in memory and is capped; /tmp allows exec for tools that need it.
        tmpfs=(
            Tmpfs("/tmp", tmp_bytes, exec=True),
            Tmpfs(HOME, tmp_bytes, owner=(AGENT_UID, AGENT_UID), mode=0o700),
        ),
        services=services,
        runtime=runtime,
        disk_watch=disk_watch,
    )


# Under gVisor the engine's pids limit counts the sandbox's own host threads (about 54 when idle,
# about 18 more per running process), not the agent's processes: scale it so `--pids N` still lets
# N processes run, while the host stays protected from an unbounded sandbox.
RUNSC_BASE_TASKS = 128
RUNSC_TASKS_PER_PROCESS = 24


def host_task_limit(pids: int, runtime: str | None) -> int:
    return RUNSC_BASE_TASKS + RUNSC_TASKS_PER_PROCESS * pids if runtime == "runsc" else pids


def bind(source: Path, target: str, *, read_only: bool) -> Mount:
    return Mount(source=source, target=target, read_only=read_only)
