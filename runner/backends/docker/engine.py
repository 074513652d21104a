"""The Docker engine: every capability (runner/backends/base.py) on the local engine, through the docker SDK
(imported by this package only). Its calls go through runner.backends.docker.api (errors translated, transient
ones retried); its image builds are runner.backends.docker.build.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from runner.backends.base import (
    LABEL_ROLE,
    Backend,
    ContainerSpec,
    ContainerStats,
    EngineInfo,
    Exec,
    Exit,
    HostMounts,
    ImageStore,
    Mount,
    Overlays,
    SessionCapacity,
    Stats,
    Tmpfs,
    local_capacity,
)
from runner.backends.docker import api
from runner.backends.docker.build import build_image
from runner.backends.docker.config import DockerConfig
from runner.backends.docker.overlay import OVERLAY_PREFIX, docker_mount, submitted_mount
from runner.base.errors import (
    BackendError,
    EngineUnavailableError,
    HarnessError,
    ImageMissingError,
    TransientBackendError,
)
from runner.base.layout import NET_DIR, RELAY
from runner.base.output import CappedBuffer, OutputSink

log = logging.getLogger(__name__)

OOM_SETTLE_SECONDS = 5.0  # how long a killed container is looked at again for the OOM kill the engine reports late


def _last_result(attempt: RetryCallState) -> Any:
    """What the last look found, when the looks ran out (it is no error: a kill that was no OOM kill)."""
    return attempt.outcome.result() if attempt.outcome is not None else {}


def _when(text: object) -> datetime | None:
    """An engine timestamp (nanoseconds, 'Z'); None for the zero time or garbage."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.year > 1 else None


def _stats(container_id: str, attrs: dict[str, Any], raw: dict[str, Any]) -> ContainerStats:
    host = attrs.get("HostConfig") or {}
    cpu = (raw.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = raw.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    # As `docker stats` counts: the page cache the kernel can drop is not the agent's memory.
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    pids = raw.get("pids_stats") or {}
    return ContainerStats(
        container_id=container_id,
        cpu_seconds=int(cpu.get("total_usage") or 0) / 1e9,
        cpus_limit=(host.get("NanoCpus") or 0) / 1e9 or None,
        memory_bytes=max(0, int(memory.get("usage") or 0) - int(cache or 0)),
        memory_limit_bytes=int(host.get("Memory") or 0) or None,
        pids=int(pids["current"]) if pids.get("current") is not None else None,
        pids_limit=int(host.get("PidsLimit") or 0) or None,
        started_at=_when((attrs.get("State") or {}).get("StartedAt")),
        read_at=_when(raw.get("read")) or datetime.now(UTC),
    )


def _mounts(spec: ContainerSpec) -> list[Mount]:
    """The spec's mounts, and the directory of its services' sockets, read-only (the agent connects,
    never creates or replaces a socket there)."""
    dirs = {service.socket.parent for service in spec.services}
    if len(dirs) > 1:
        raise BackendError(f"the services' sockets must share one directory, not {sorted(map(str, dirs))}")
    return [*spec.mounts, *(Mount(source=d, target=NET_DIR, read_only=True) for d in dirs)]


def _size(n: int) -> str:
    """A size as the engine's options write it: `512m`, `1g`."""
    for suffix, unit in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _tmpfs(tmpfs: Tmpfs) -> str:
    """A tmpfs's mount options (the engine makes one noexec unless told `exec`)."""
    options = ["rw", *(["exec"] if tmpfs.exec else []), "nosuid", "nodev", f"size={_size(tmpfs.size_bytes)}"]
    if tmpfs.owner is not None:
        options += [f"uid={tmpfs.owner[0]}", f"gid={tmpfs.owner[1]}"]
    if tmpfs.mode is not None:
        options.append(f"mode={tmpfs.mode:04o}")
    return ",".join(options)


def _log_config(spec: ContainerSpec) -> dict[str, Any]:
    return {"type": "json-file", "config": {"max-size": _size(spec.log_max_bytes), "max-file": "1"}}


def _command(spec: ContainerSpec) -> list[str]:
    """The command behind `harness-relay`, which gives it a loopback port for each service's socket."""
    if not spec.services:
        return spec.command
    listen = [arg for s in spec.services for arg in ("--listen", f"127.0.0.1:{s.port}={NET_DIR}/{s.socket.name}")]
    return [RELAY, *listen, "--", *spec.command]


@dataclass
class _Running:
    container: Any
    drain: threading.Thread


class DockerBackend(Backend, ImageStore, Exec, Stats, HostMounts, Overlays):
    name = "docker"

    def __init__(self, config: DockerConfig | None = None) -> None:
        self.config = config or DockerConfig()
        self._client: Any = None
        self._running: dict[str, _Running] = {}  # started here: the SDK object and its output drain

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=api.API_TIMEOUT)
            except docker.errors.DockerException as exc:
                raise EngineUnavailableError(
                    f"cannot reach the Docker engine ({exc}); is dockerd running and are you in the docker group?"
                ) from None
        return self._client

    def check(self) -> EngineInfo:
        try:
            info = api.call("ping the Docker engine", self.client.info)
        except TransientBackendError as exc:
            raise EngineUnavailableError(
                f"cannot reach the Docker engine ({exc.message}); is dockerd running?"
            ) from None
        return EngineInfo(
            name="docker",
            version=str(info.get("ServerVersion", "?")),
            runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
        )

    def capacity(self, *, cpus: float, memory_bytes: int) -> SessionCapacity:
        """This machine's cores and memory (the engine runs here)."""
        return local_capacity(cpus=cpus, memory_bytes=memory_bytes)

    def image_exists(self, image: str) -> bool:
        try:
            api.call(f"inspect image {image}", lambda: self.client.images.get(image))
        except ImageMissingError:
            return False
        return True

    def image_label(self, image: str, label: str) -> str | None:
        try:
            img = api.call(f"inspect image {image}", lambda: self.client.images.get(image))
        except ImageMissingError:
            return None
        labels = (img.attrs.get("Config") or {}).get("Labels") or {}
        value = labels.get(label)
        return str(value) if value is not None else None

    def image_id(self, image: str) -> str | None:
        try:
            img = api.call(f"inspect image {image}", lambda: self.client.images.get(image))
        except ImageMissingError:
            return None
        return str(img.id)

    def build_image(
        self, *, context: Path, tag: str, labels: dict[str, str], dockerfile: str | None = None,
        buildargs: dict[str, str] | None = None, target: str | None = None,
    ) -> None:  # fmt: skip
        build_image(self.client, context=context, tag=tag, labels=labels, dockerfile=dockerfile,
                    buildargs=buildargs, target=target)  # fmt: skip

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        """The arguments of the engine's create call, as JSON data."""
        kwargs = self._create_args(spec)
        kwargs["mounts"] = [submitted_mount(m) for m in _mounts(spec)]
        kwargs["log_config"] = _log_config(spec)
        return kwargs

    @staticmethod
    def _create_args(spec: ContainerSpec) -> dict[str, Any]:
        posture = spec.posture
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": _command(spec),
            "user": posture.user,
            "working_dir": spec.workdir,
            "environment": spec.env,
            "labels": spec.labels,
            "tmpfs": {tmpfs.target: _tmpfs(tmpfs) for tmpfs in spec.tmpfs},
            "network_mode": spec.network,
            "nano_cpus": int(max(spec.cpus, spec.cpu_burst or 0) * 1e9),
            "mem_limit": spec.memory_bytes,
            "memswap_limit": spec.memory_bytes,  # no swap: memory is a hard cap
            "pids_limit": spec.pids,
            "cap_drop": list(posture.drop_capabilities),
            # Docker applies its default seccomp profile unless told otherwise: nothing to add for it.
            "security_opt": ["no-new-privileges"] if posture.no_new_privileges else [],
            "read_only": posture.read_only_root,
            "init": posture.init,
            "privileged": False,
            "ipc_mode": "private" if posture.private_ipc else "shareable",
            "stdin_open": False,
            "tty": False,
            "detach": True,
        }
        if spec.runtime and spec.runtime != "runc":
            kwargs["runtime"] = spec.runtime
        return kwargs

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        kwargs = self._create_args(spec)
        volume_labels = {k: v for k, v in spec.labels.items() if k != LABEL_ROLE}  # whichever container made it
        kwargs["mounts"] = [docker_mount(m, volume_labels) for m in _mounts(spec)]
        kwargs["log_config"] = LogConfig(**_log_config(spec))
        container = api.call(f"create a container from {spec.image}", lambda: self.client.containers.create(**kwargs))
        try:
            # Attached before the start, the stream has every byte in the order it was written,
            # across stdout and stderr (the log driver would regroup them line by line, which
            # could split a secret into pieces that no longer meet in the redactor).
            stream = api.call(
                "attach to a container",
                lambda: container.attach(stdout=True, stderr=True, stream=True, logs=False),
            )
            api.call("start a container", container.start)
        except BaseException:
            with contextlib.suppress(HarnessError):
                api.call("remove a container", lambda: container.remove(force=True, v=True))
            raise
        drain = threading.Thread(target=self._drain, args=(container.short_id, stream, output), daemon=True)
        drain.start()
        self._running[str(container.id)] = _Running(container, drain)
        return str(container.id)

    def _container(self, container_id: str) -> Any:
        running = self._running.get(container_id)
        if running is not None:
            return running.container
        return api.call("find a container", lambda: self.client.containers.get(container_id))

    def wait(self, container_id: str, timeout: float) -> bool:
        return self._wait(self._container(container_id), timeout)

    def disk_usage(self, container_id: str, path: str, user: str) -> int | None:
        out = CappedBuffer(4096)
        self.exec(container_id, ["du", "-sxb", path], user=user, env={}, output=out, timeout=api.API_TIMEOUT)
        first = out.text().split("\t", 1)[0].strip()
        return int(first) if first.isdigit() else None

    def exec(
        self, container_id: str, command: list[str], *, user: str, env: dict[str, str], output: OutputSink,
        timeout: float,
    ) -> int | None:  # fmt: skip
        low = self.client.api
        exec_id = api.call(
            "create an exec", lambda: low.exec_create(container_id, command, user=user, environment=env)["Id"]
        )
        with api.translated("start an exec"):  # never retried: a second start of one exec is refused
            stream = low.exec_start(exec_id, stream=True)
        drain = threading.Thread(target=self._drain, args=(f"exec {exec_id[:12]}", stream, output), daemon=True)
        drain.start()
        drain.join(timeout)
        if drain.is_alive():
            return None
        state = api.call("inspect an exec", lambda: low.exec_inspect(exec_id))
        return None if state.get("Running") else int(state.get("ExitCode", -1))

    def finish(self, container_id: str) -> Exit:
        running = self._running.get(container_id)
        if running is not None:
            running.drain.join(timeout=10)
        container = self._container(container_id)

        def state() -> dict[str, Any]:
            api.call("inspect a container", container.reload)
            return container.attrs.get("State") or {}

        # The engine learns of an OOM kill from an event of its own, which can come after the exit it reports:
        # a container killed (137) and not (yet) marked OOMKilled is looked at again, briefly.
        def killed_unmarked(s: dict[str, Any]) -> bool:
            return not s.get("Running") and s.get("ExitCode") == 137 and not s.get("OOMKilled")

        found: dict[str, Any] = Retrying(
            retry=retry_if_result(killed_unmarked), stop=stop_after_delay(OOM_SETTLE_SECONDS), wait=wait_fixed(0.1),
            retry_error_callback=_last_result,
        )(state)  # fmt: skip
        return Exit(
            exit_code=None if found.get("Running") else int(found.get("ExitCode", -1)),
            oom_killed=bool(found.get("OOMKilled")),
        )

    def remove(self, container_id: str) -> None:
        self._running.pop(container_id, None)
        try:
            self._remove(container_id)
        except BackendError as exc:
            if isinstance(exc, TransientBackendError):
                raise
            log.debug("remove: %s", exc.message)  # already gone

    @staticmethod
    def _drain(what: str, stream: Any, output: OutputSink) -> None:
        # Runs until the output ends; errors end the drain, never the run.
        try:
            for chunk in stream:
                output.write(chunk)
        except Exception as exc:
            log.debug("output drain of %s ended: %s", what, exc)

    @staticmethod
    def _wait(container: Any, timeout: float) -> bool:
        """True when the container exited within `timeout` seconds."""
        try:
            with api.translated("wait for a container"):
                container.wait(timeout=timeout)
        except TransientBackendError:
            # A read timeout of the wait call looks like a transport error: ask the engine.
            api.call("inspect a container", container.reload)
            return not (container.attrs.get("State") or {}).get("Running")
        return True

    @staticmethod
    def _stop(container: Any, grace: float) -> None:
        try:
            api.call("stop a container", lambda: container.stop(timeout=max(1, int(grace))))
        except BackendError as exc:
            if isinstance(exc, TransientBackendError):
                raise
            log.debug("stop: %s", exc.message)  # already gone

    def stop(self, container_id: str, *, grace: float) -> None:
        try:
            container = self._container(container_id)
        except BackendError:
            return
        self._stop(container, grace)

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = api.call("list containers", lambda: self.client.containers.list(all=True, filters=filters))
        return {str(c.id): dict(c.labels or {}) for c in found}

    def stats(self, container_id: str) -> ContainerStats | None:
        def find() -> Any:
            try:
                return self.client.containers.get(container_id)
            except docker.errors.NotFound:
                return None

        container = api.call("find a container", find)
        if container is None or not (container.attrs.get("State") or {}).get("Running"):
            return None
        try:
            # One sample, not a stream: the engine answers at once (no second sample for a rate).
            raw = api.call("read container stats", lambda: container.stats(stream=False, one_shot=True))
        except BackendError as exc:
            if isinstance(exc, TransientBackendError):
                raise
            return None  # it ended between the two calls
        return _stats(str(container.id), container.attrs, raw)

    def _remove(self, container_id: str) -> None:
        api.call("remove a container", lambda: self.client.api.remove_container(container_id, force=True, v=True))

    def overlays(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        volumes = api.call("list overlay volumes", lambda: self.client.api.volumes(filters=filters))
        return {
            str(v["Name"]): dict(v.get("Labels") or {})
            for v in (volumes.get("Volumes") or [])
            if str(v["Name"]).startswith(OVERLAY_PREFIX)
        }

    def remove_overlays(self, labels: dict[str, str]) -> list[str]:
        names = list(self.overlays(labels))
        for name in names:
            try:
                api.call("remove an overlay's volume", functools.partial(self.client.api.remove_volume, name))
            except BackendError as exc:
                if isinstance(exc, TransientBackendError) or "404" not in exc.message:
                    raise
        return names

    def prune_images(self, labels: dict[str, str]) -> list[str]:
        filters = {"dangling": True, "label": [f"{k}={v}" for k, v in labels.items()]}
        result = api.call("prune images", lambda: self.client.images.prune(filters=filters))
        return [str(d.get("Deleted") or d.get("Untagged")) for d in (result.get("ImagesDeleted") or [])]
