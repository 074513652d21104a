"""The Kubernetes backend: each container a `batch/v1` Job, the only module that imports the
official `kubernetes` client.

A Job's pod has two containers sharing emptyDir volumes, one per mount of the spec: `main` runs
the command once `sync` has received the mounts' contents (streamed in as tar through the API's
exec, never a hostPath: the cluster may have many nodes and none holds the user's files); after
`main` ends, the read-write mounts are streamed back the same way and `sync` is told to exit. The
host extracts them with Python's `tar` filter (nothing written outside the new directory, no
setuid bits) and without devices or fifos.
So the supervisor and the copy's helpers work unchanged, and the work still comes back as the
checkpoint helper's git bundle, harvested exactly as on Docker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as k8s_stream
from urllib3.exceptions import HTTPError

from runner.backends.base import Backend, ContainerSpec, EngineInfo, Exit
from runner.backends.retry import retry_transient
from runner.base.errors import BackendError, DockerUnavailableError, ImageMissingError, TransientBackendError
from runner.base.layout import RELAY
from runner.base.output import OutputSink
from runner.record.models import KubernetesBackendConfig

log = logging.getLogger(__name__)

MAIN = "main"
SYNC = "sync"
CONTROL = "/harness-sync"  # the handshake files; read-only in `main`
SYNC_ROOT = "/sync"  # where `sync` sees mount i, as /sync/m<i>
POLL_SECONDS = 0.5
API_TIMEOUT = 60
# The Job's own deadline is a backstop for a supervisor that died: the harness's watchdog ends the
# iteration first, so that its work can still be collected from the pod.
TRANSFER_ALLOWANCE_SECONDS = 900
MAX_TRANSFER_BYTES = 16 * 1024**3
CHUNK = 1024 * 1024
SHORT_EXEC_SECONDS = 30.0  # a touch, a du: never a transfer
START_GRACE = 300.0  # after the pending timeout: how long a placed pod may take to run (image pulls)
PULL_FAILURES = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName")

_WAIT_MAIN = f'until [ -e {CONTROL}/ready ]; do sleep 0.2; done; "$@"; exit $?'
# The shell stays pid 1 of `main` and runs the command as its child: `stop` signals every process
# but pid 1 from inside (a pid namespace's init ignores signals it does not handle).
_WAIT_SYNC = f"until [ -e {CONTROL}/done ]; do sleep 0.5; done"
_STOP = 'kill -s TERM -- -1; i=0; while [ "$i" -lt "$1" ]; do sleep 1; i=$((i+1)); done; kill -s KILL -- -1 || true'


def _translate(exc: Exception, what: str) -> BackendError:
    if isinstance(exc, ApiException):
        status = exc.status or 0
        message = f"{what}: Kubernetes API error {status}: {exc.reason}"
        return TransientBackendError(message) if status >= 500 or status == 429 else BackendError(message)
    return TransientBackendError(f"{what}: lost the Kubernetes API ({exc.__class__.__name__}: {exc})")


def _name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:20] or "c"


def _safe_dirs(spec: ContainerSpec) -> dict[str, str]:
    """A volume's top directory is root's (group the agent's), not the agent uid's as on Docker: git
    would refuse a repository there as of dubious ownership. Each writable mount is named safe, in
    the one config scope git honours for it besides system and global: GIT_CONFIG_COUNT (command)."""
    targets = [m.target for m in spec.mounts if not m.read_only]
    env = {"GIT_CONFIG_COUNT": str(len(targets))} if targets else {}
    for i, target in enumerate(targets):
        env |= {f"GIT_CONFIG_KEY_{i}": "safe.directory", f"GIT_CONFIG_VALUE_{i}": target}
    return env


def _agent_files(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Python's `tar` filter (no member outside `dest`, none written through a link, no setuid
    bits; a link's target may point anywhere, as in a repository), and no devices or fifos."""
    if member.ischr() or member.isblk() or member.isfifo():
        return None
    return tarfile.tar_filter(member, dest)


READY, OPEN, DATA, EOF, CLOSE = 1, 2, 3, 4, 5  # harness-relay --mux frames
HEADER = struct.Struct(">BII")
TUNNEL_READY_SECONDS = 30.0


class _Tunnel:
    """The spec's services for a pod: `harness-relay --mux` in its `sync` container listens on the
    pod's loopback (shared with `main`) and carries each connection over the exec stream to this
    thread, which connects it to the host's Unix socket. The agent's key never enters the cluster:
    the gateway that adds it runs here, with the supervisor."""

    def __init__(self, resp: Any, services: dict[str, Path]) -> None:
        self.resp = resp
        self.services = services
        self.lock = threading.Lock()  # one writer at a time on the exec stream
        self.socks: dict[int, socket.socket] = {}
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="harness-k8s-tunnel", daemon=True)

    def send(self, kind: int, conn: int, payload: bytes = b"") -> None:
        with self.lock:
            self.resp.write_stdin(HEADER.pack(kind, conn, len(payload)) + payload)

    def _run(self) -> None:
        buffer = bytearray()
        try:
            while self.resp.is_open():
                self.resp.update(timeout=1)
                if self.resp.peek_stdout():
                    buffer.extend(self.resp.read_stdout())
                while len(buffer) >= HEADER.size:
                    kind, conn, size = HEADER.unpack_from(buffer)
                    if len(buffer) < HEADER.size + size:
                        break
                    payload = bytes(buffer[HEADER.size : HEADER.size + size])
                    del buffer[: HEADER.size + size]
                    self._frame(kind, conn, payload)
        except Exception as exc:  # the pod ended, or the API went away: every connection ends
            log.debug("tunnel ended: %s", exc)
        finally:
            for sock in self.socks.values():
                with contextlib.suppress(OSError):
                    sock.close()
            self.ready.set()

    def _frame(self, kind: int, conn: int, payload: bytes) -> None:
        if kind == READY:
            self.ready.set()
        elif kind == OPEN:
            self._open(conn, self.services.get(payload.decode("utf-8", "replace")))
        elif (known := self.socks.get(conn)) is not None:
            try:
                if kind == DATA:
                    known.sendall(payload)
                elif kind == EOF:
                    known.shutdown(socket.SHUT_WR)
                else:
                    self.socks.pop(conn, None)
                    known.close()
            except OSError:
                self.socks.pop(conn, None)
                known.close()
                self.send(CLOSE, conn)

    def _open(self, conn: int, path: Path | None) -> None:
        if path is None:  # a service this run does not have
            self.send(CLOSE, conn)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            self.send(CLOSE, conn)
            return
        self.socks[conn] = sock
        threading.Thread(target=self._upstream, args=(conn, sock), daemon=True).start()

    def _upstream(self, conn: int, sock: socket.socket) -> None:
        try:
            while data := sock.recv(CHUNK):
                self.send(DATA, conn, data)
            self.send(EOF, conn)
        except Exception:  # the socket or the stream closed: the pod's side gets a close
            with contextlib.suppress(Exception):
                self.send(CLOSE, conn)


@dataclass
class _Running:
    pod: str
    spec: ContainerSpec
    drain: threading.Thread | None = None
    tunnel: _Tunnel | None = None
    failure: str | None = None  # the pod could not run (no node fits)
    vanished: bool = False


class KubernetesBackend(Backend):
    """An engine with lifecycle and inventory only: the cluster pulls its images (nothing is built or pruned
    here), the copy travels with each pod (no exec into a kept helper), and the metrics API is optional in a
    cluster (the hud shows no sample)."""

    name = "kubernetes"
    start_grace = START_GRACE
    transfer_allowance = TRANSFER_ALLOWANCE_SECONDS  # in the Job's deadline, besides the run's own

    def __init__(self, config: KubernetesBackendConfig) -> None:
        self.config = config
        self.namespace = config.namespace
        self._api: Any = None
        self._running: dict[str, _Running] = {}

    # -- the client -------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        if self._api is None:
            configuration = k8s.Configuration()
            try:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=self.config.kubeconfig, context=self.config.context,
                    client_configuration=configuration, persist_config=False,
                )  # fmt: skip
            except Exception as exc:  # the loader raises ConfigException, OSError, TypeError, ValueError
                raise DockerUnavailableError(f"cannot load the kubeconfig: {exc}") from None
            # Transient faults are retried by `_call`, with the same policy as Docker's: urllib3's own
            # retries would only add attempts and log lines of their own.
            configuration.retries = False
            self._api = k8s.ApiClient(configuration=configuration)
        return self._api

    @property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.api)

    def _exec_api(self) -> Any:
        """A client of its own for each exec: the client's `stream` swaps its ApiClient's request
        method for the websocket one while it connects, which would derail any other thread's calls."""
        return k8s.CoreV1Api(k8s.ApiClient(configuration=self.api.configuration))

    @property
    def batch(self) -> Any:
        return k8s.BatchV1Api(self.api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call, translated, its transient faults retried (bounded: runner.backends.retry)."""
        kwargs.setdefault("_request_timeout", API_TIMEOUT)

        @retry_transient
        def attempt() -> Any:
            try:
                return fn(*args, **kwargs)
            except (ApiException, HTTPError, OSError) as exc:
                raise _translate(exc, what) from None

        return attempt()

    def _create(self, what: str, fn: Any, *args: Any) -> None:
        """A create, retried like any call: a conflict on a later attempt means an earlier one got through
        (its answer was lost), as every name made here is new."""
        attempts = 0

        def create(**kwargs: Any) -> None:
            nonlocal attempts
            attempts += 1
            try:
                fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status != 409 or attempts == 1:
                    raise

        self._call(what, create)

    def check(self) -> EngineInfo:
        try:
            version = self._call("reach the cluster", k8s.VersionApi(self.api).get_code)
            self._call("read the namespace", self.core.read_namespace, self.namespace)
        except BackendError as exc:
            raise DockerUnavailableError(f"cannot reach the Kubernetes cluster ({exc.message})") from None
        classes: tuple[str, ...] = ()
        with contextlib.suppress(BackendError):
            found = self._call("list runtime classes", k8s.NodeV1Api(self.api).list_runtime_class)
            classes = tuple(sorted(rc.metadata.name for rc in found.items))
        return EngineInfo(name="kubernetes", version=str(version.git_version), runtimes=("runc", *classes))

    # -- what is submitted ----------------------------------------------------------------------

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        job = self._job(spec, "harness-" + _name(spec.labels.get("io.solo-harness.role", "c")) + "-NAME")
        return dict(self.api.sanitize_for_serialization(job))

    def _job(self, spec: ContainerSpec, name: str) -> Any:
        posture = spec.posture
        volumes = [k8s.V1Volume(name="control", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Mi"))]
        main_mounts = [k8s.V1VolumeMount(name="control", mount_path=CONTROL, read_only=True)]
        sync_mounts = [k8s.V1VolumeMount(name="control", mount_path=CONTROL)]
        for i, mount in enumerate(spec.mounts):
            volumes.append(k8s.V1Volume(name=f"m{i}", empty_dir=k8s.V1EmptyDirVolumeSource()))
            main_mounts.append(k8s.V1VolumeMount(name=f"m{i}", mount_path=mount.target, read_only=mount.read_only))
            sync_mounts.append(k8s.V1VolumeMount(name=f"m{i}", mount_path=f"{SYNC_ROOT}/m{i}"))
        for i, tmpfs in enumerate(sorted(spec.tmpfs, key=lambda t: t.target)):
            memory = k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=str(tmpfs.size_bytes))
            volumes.append(k8s.V1Volume(name=f"t{i}", empty_dir=memory))
            main_mounts.append(k8s.V1VolumeMount(name=f"t{i}", mount_path=tmpfs.target))
        hardened = k8s.V1SecurityContext(
            allow_privilege_escalation=not posture.no_new_privileges,
            read_only_root_filesystem=posture.read_only_root,
            capabilities=k8s.V1Capabilities(drop=list(posture.drop_capabilities)),
            privileged=False,
        )
        cpu = f"{max(1, round(spec.cpus * 1000))}m"
        cpu_limit = f"{max(1, round(max(spec.cpus, spec.cpu_burst or 0) * 1000))}m"
        main = k8s.V1Container(
            name=MAIN,
            image=spec.image,
            image_pull_policy=self.config.image_pull_policy,
            command=["sh", "-c", _WAIT_MAIN, "harness-wait", *spec.command],
            working_dir=spec.workdir,
            env=[k8s.V1EnvVar(name=k, value=v) for k, v in sorted({**_safe_dirs(spec), **spec.env}.items())],
            # Requests equal to limits (but a helper's CPU burst): never placed on a node without room.
            resources=k8s.V1ResourceRequirements(
                limits={"cpu": cpu_limit, "memory": str(spec.memory_bytes)},
                requests={"cpu": cpu, "memory": str(spec.memory_bytes)},
            ),
            security_context=hardened,
            volume_mounts=main_mounts,
        )
        sync = k8s.V1Container(
            name=SYNC,
            image=spec.image,
            image_pull_policy=self.config.image_pull_policy,
            command=["sh", "-c", _WAIT_SYNC],
            working_dir="/",
            resources=k8s.V1ResourceRequirements(
                limits={"cpu": "500m", "memory": "256Mi"}, requests={"cpu": "100m", "memory": "256Mi"}
            ),
            security_context=hardened,
            volume_mounts=sync_mounts,
        )
        pod_labels = dict(spec.labels)
        deadline = (spec.deadline_seconds or 0) + self.config.pending_timeout_seconds + self.transfer_allowance
        return k8s.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace, labels=pod_labels),
            spec=k8s.V1JobSpec(
                backoff_limit=0,
                active_deadline_seconds=math.ceil(deadline),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=pod_labels),
                    spec=k8s.V1PodSpec(
                        restart_policy="Never",
                        automount_service_account_token=False,
                        enable_service_links=False,
                        dns_policy="Default",  # no cluster DNS is needed: the pod has no network
                        termination_grace_period_seconds=5,  # the harness stops the agent itself, first
                        runtime_class_name=spec.runtime if spec.runtime and spec.runtime != "runc" else None,
                        security_context=k8s.V1PodSecurityContext(
                            run_as_user=posture.uid,
                            run_as_group=posture.gid,
                            fs_group=posture.gid,
                            run_as_non_root=True,
                            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                        ),
                        containers=[main, sync],
                        volumes=volumes,
                    ),
                ),
            ),
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        name = f"harness-{_name(spec.labels.get('io.solo-harness.role', 'c'))}-{uuid.uuid4().hex[:10]}"
        self._create("create a Job", self.batch.create_namespaced_job, self.namespace, self._job(spec, name))
        running = _Running(pod="", spec=spec)
        self._running[name] = running
        try:
            running.pod = self._await_pod(name)
            if running.failure is None:
                for i, mount in enumerate(spec.mounts):
                    self._push(running.pod, mount.source, f"{SYNC_ROOT}/m{i}")
                if spec.services:
                    running.tunnel = self._tunnel(running.pod, spec)
                drain = threading.Thread(target=self._drain, args=(running.pod, output), daemon=True)
                drain.start()
                running.drain = drain
                self._exec(running.pod, SYNC, ["touch", f"{CONTROL}/ready"], what="start the command")
        except BaseException:
            with contextlib.suppress(BackendError):
                self.remove(name)
            raise
        return name

    def _await_pod(self, job: str) -> str:
        """The Job's pod once both containers run; a pod no node takes ends as a failure."""
        pending_since = time.monotonic()
        while True:
            pods = self._call(
                "find the Job's pod", self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={job}"
            ).items
            if pods:
                pod = pods[0]
                failure = self._unschedulable(pod)
                if failure and time.monotonic() - pending_since > self.config.pending_timeout_seconds:
                    self._running[job].failure = failure
                    return str(pod.metadata.name)
                for status in pod.status.container_statuses or []:
                    waiting = status.state.waiting if status.state else None
                    if waiting is not None and waiting.reason in PULL_FAILURES:
                        raise ImageMissingError(
                            f"the cluster cannot pull image {status.image}: {waiting.reason} ({waiting.message or ''})"
                        )
                statuses = pod.status.container_statuses or []
                if len(statuses) == 2 and all(s.state and s.state.running for s in statuses):
                    return str(pod.metadata.name)
                if pod.status.phase in {"Failed", "Succeeded"}:
                    raise BackendError(f"the pod of Job {job} ended before it started: {pod.status.reason or ''}")
                if (
                    not failure
                    and time.monotonic() - pending_since > self.config.pending_timeout_seconds + self.start_grace
                ):
                    # Placed but never running (a volume that does not mount, a node that does not answer).
                    waits = [f"{s.name}: {s.state.waiting.reason}" for s in statuses if s.state and s.state.waiting]
                    raise BackendError(f"the pod of Job {job} did not start: {', '.join(waits) or pod.status.phase}")
            elif time.monotonic() - pending_since > self.config.pending_timeout_seconds + self.start_grace:
                raise BackendError(f"Job {job} made no pod (a quota, or an admission policy that refuses it?)")
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _unschedulable(pod: Any) -> str | None:
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                return f"no node can run it: {condition.message}"
        return None

    def _exec(self, pod: str, container: str, command: list[str], *, what: str, stdin: Path | None = None,
              stdout: Path | None = None, timeout: float | None = SHORT_EXEC_SECONDS) -> None:  # fmt: skip
        """Run `command` in a container of `pod`, feeding it `stdin` and keeping its stdout in `stdout`;
        given up after `timeout` seconds (a stream into a pod that vanished may never close)."""
        deadline = time.monotonic() + timeout if timeout is not None else math.inf
        try:
            resp = k8s_stream(
                self._exec_api().connect_get_namespaced_pod_exec, pod, self.namespace, container=container,
                command=command, stdin=stdin is not None, stdout=True, stderr=True, tty=False,
                _preload_content=False, binary=True,
            )  # fmt: skip
        except (ApiException, HTTPError, OSError) as exc:
            raise _translate(exc, what) from None
        errors = bytearray()
        received = 0
        try:
            with contextlib.ExitStack() as stack:
                sink = stack.enter_context(stdout.open("wb")) if stdout is not None else None
                if stdin is not None:
                    with stdin.open("rb") as source:
                        while chunk := source.read(CHUNK):
                            resp.write_stdin(chunk)
                while resp.is_open():
                    if time.monotonic() > deadline:
                        raise BackendError(f"{what}: no end after {timeout:.0f} s")
                    resp.update(timeout=1)
                    if resp.peek_stdout():
                        data = resp.read_stdout()
                        received += len(data)
                        if received > MAX_TRANSFER_BYTES:
                            raise BackendError(f"{what}: more than {MAX_TRANSFER_BYTES} bytes")
                        if sink is not None:
                            sink.write(data)
                    if resp.peek_stderr():
                        errors.extend(resp.read_stderr()[-4096:])
            code = resp.returncode
        finally:
            resp.close()
        if code != 0:
            tail = errors.decode("utf-8", "replace").strip().splitlines()[-3:] or [f"exit {code}"]
            raise BackendError(f"{what}: {' | '.join(tail)}")

    def _tunnel(self, pod: str, spec: ContainerSpec) -> _Tunnel:
        listen = [arg for s in spec.services for arg in ("--mux", f"127.0.0.1:{s.port}={s.name}")]
        try:
            resp = k8s_stream(
                self._exec_api().connect_get_namespaced_pod_exec, pod, self.namespace, container=SYNC,
                command=[RELAY, *listen], stdin=True, stdout=True, stderr=True, tty=False,
                _preload_content=False, binary=True,
            )  # fmt: skip
        except (ApiException, HTTPError, OSError) as exc:
            raise _translate(exc, "open the services' tunnel") from None
        tunnel = _Tunnel(resp, {s.name: s.socket for s in spec.services})
        tunnel.thread.start()
        if not tunnel.ready.wait(TUNNEL_READY_SECONDS) or not resp.is_open():
            errors = resp.read_stderr() if resp.is_open() else b""
            resp.close()
            detail = errors.decode("utf-8", "replace").strip() or f"does the image {spec.image} have {RELAY}?"
            raise BackendError(f"the services' tunnel did not start: {detail}")
        return tunnel

    def _push(self, pod: str, source: Path, target: str) -> None:
        """The contents of the host directory `source` into `target` of the pod's `sync` container."""
        with tempfile.TemporaryDirectory(prefix="harness-k8s-") as tmp:
            archive = Path(tmp) / "in.tar"
            # The entries under `source`, not `source` itself: the volume's own directory is not the
            # agent uid's to chmod or retime.
            names = sorted(entry.name for entry in source.iterdir())
            made = subprocess.run(
                ["tar", "-C", str(source), "--numeric-owner", "--null", "-cf", str(archive), "-T", "-"],
                input="".join(f"{name}\0" for name in names), capture_output=True, text=True, check=False,
            )  # fmt: skip
            if made.returncode not in (0, 1):  # 1: a file changed as it was read
                raise BackendError(f"packing {source} for the pod: {made.stderr.strip()[-300:]}")
            size = archive.stat().st_size
            # --no-overwrite-dir: the volume's own directory is not the agent uid's to retime or chmod.
            script = 'head -c "$1" | tar -x --no-same-owner --no-overwrite-dir -C "$2" -f -'
            self._exec(pod, SYNC, ["sh", "-c", script, "push", str(size), target], stdin=archive,
                       what=f"sending {source} to the pod", timeout=TRANSFER_ALLOWANCE_SECONDS)  # fmt: skip

    def _pull(self, pod: str, source: str, target: Path) -> None:
        """Make the host directory `target` hold what `source` of the pod holds (the agent's files:
        extracted with `_agent_files`, into a new directory, then swapped in)."""
        with tempfile.TemporaryDirectory(prefix="harness-k8s-", dir=target.parent) as tmp:
            archive = Path(tmp) / "out.tar"
            script = 'chmod -R u+rwX "$1" 2>/dev/null; tar -C "$1" -cf - .'
            self._exec(pod, SYNC, ["sh", "-c", script, "pull", source], stdout=archive,
                       what=f"collecting {target.name} from the pod", timeout=TRANSFER_ALLOWANCE_SECONDS)  # fmt: skip
            fresh = Path(tmp) / "tree"
            fresh.mkdir()
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(fresh, filter=_agent_files)  # noqa: S202 - the filter is the check
            except (tarfile.TarError, OSError) as exc:
                raise BackendError(f"collecting {target.name} from the pod: {exc}") from None
            for old in list(target.iterdir()):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            for new in fresh.iterdir():
                new.rename(target / new.name)

    def _drain(self, pod: str, output: OutputSink) -> None:
        # Runs until the container's log ends; errors end the drain, never the run.
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=MAIN, follow=True, _preload_content=False
            )
            for chunk in resp.stream(64 * 1024, decode_content=False):
                output.write(chunk)
        except Exception as exc:
            log.debug("log drain of %s ended: %s", pod, exc)

    def _pod(self, container_id: str) -> Any:
        running = self._running.get(container_id)
        name = running.pod if running is not None else None
        if name is None:
            pods = self._call(
                "find the Job's pod", self.core.list_namespaced_pod, self.namespace,
                label_selector=f"job-name={container_id}",
            ).items  # fmt: skip
            return pods[0] if pods else None
        try:
            return self.core.read_namespaced_pod(name, self.namespace, _request_timeout=API_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _translate(exc, "read the pod") from None
        except (HTTPError, OSError) as exc:
            raise _translate(exc, "read the pod") from None

    @staticmethod
    def _main_state(pod: Any) -> Any:
        for status in pod.status.container_statuses or []:
            if status.name == MAIN and status.state is not None:
                return status.state
        return None

    def wait(self, container_id: str, timeout: float) -> bool:
        running = self._running.get(container_id)
        if running is not None and running.failure is not None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            pod = self._pod(container_id)
            if pod is None:
                if running is not None:
                    running.vanished = True
                return True
            state = self._main_state(pod)
            if (state is not None and state.terminated is not None) or pod.status.phase in {"Failed", "Succeeded"}:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_SECONDS, left))

    def disk_usage(self, container_id: str, path: str, user: str) -> int | None:
        running = self._running.get(container_id)
        if running is None or not running.pod:
            return None
        index = next((i for i, m in enumerate(running.spec.mounts) if m.target == path), None)
        where = f"{SYNC_ROOT}/m{index}" if index is not None else None
        container = SYNC if where else MAIN
        with tempfile.TemporaryDirectory(prefix="harness-k8s-") as tmp:
            out = Path(tmp) / "du"
            try:
                self._exec(running.pod, container, ["du", "-sxb", where or path], what="measure disk use", stdout=out)
            except BackendError:
                return None
            first = out.read_bytes().split(b"\t", 1)[0].strip()
        return int(first) if first.isdigit() else None

    def stop(self, container_id: str, *, grace: float) -> None:
        running = self._running.get(container_id)
        pod = running.pod if running is not None else None
        if not pod:
            found = self._pod(container_id)
            if found is None:
                return
            pod = str(found.metadata.name)
        with contextlib.suppress(BackendError):
            self._exec(pod, MAIN, ["sh", "-c", _STOP, "stop", str(max(1, int(grace)))], what="stop the container",
                       timeout=grace + SHORT_EXEC_SECONDS)  # fmt: skip

    def finish(self, container_id: str) -> Exit:
        running = self._running.get(container_id)
        if running is not None and running.failure is not None:
            return Exit(exit_code=None, failure=running.failure)
        pod = self._pod(container_id)
        gone = pod is None or (running is not None and running.vanished)
        state = None if gone else self._main_state(pod)
        terminated = state.terminated if state is not None else None
        # No exit to report, or a pod that is no longer running as a finished agent's is (its `sync` waits for
        # the harness): the Job's own deadline may have ended it (one more API call, only then).
        abnormal = gone or terminated is None or pod.status.phase != "Running" or pod.metadata.deletion_timestamp
        deadline = self._deadline_fired(container_id) if abnormal else None
        if deadline is not None:
            raise BackendError(
                f"Job {container_id} reached its own deadline (activeDeadlineSeconds {deadline}, the backstop for a "
                "lost supervisor) and Kubernetes ended its pod: the iteration is lost"
            )
        if gone:
            raise BackendError(f"the pod of Job {container_id} vanished: the iteration is lost")
        if running is not None and running.drain is not None:
            running.drain.join(timeout=30)
        if terminated is None:
            return Exit(exit_code=None)
        if running is not None and pod.status.phase == "Running":
            for i, mount in enumerate(running.spec.mounts):
                if not mount.read_only:
                    self._pull(running.pod, f"{SYNC_ROOT}/m{i}", mount.source)
            with contextlib.suppress(BackendError):
                self._exec(running.pod, SYNC, ["touch", f"{CONTROL}/done"], what="end the pod")
        return Exit(exit_code=int(terminated.exit_code), oom_killed=terminated.reason == "OOMKilled")

    def _deadline_fired(self, job: str) -> int | None:
        """The Job's activeDeadlineSeconds when that deadline ended it. Kubernetes then deletes the pod (its
        `main` shows no exit, or the kill's), so nothing of the iteration can be collected."""
        with contextlib.suppress(BackendError):
            found = self._call("read the Job", self.batch.read_namespaced_job_status, job, self.namespace)
            for condition in found.status.conditions or []:
                if condition.type == "Failed" and condition.reason == "DeadlineExceeded":
                    return int(found.spec.active_deadline_seconds)
        return None

    def remove(self, container_id: str) -> None:
        running = self._running.pop(container_id, None)
        if running is not None and running.tunnel is not None:
            with contextlib.suppress(Exception):
                running.tunnel.resp.close()
        try:
            self.batch.delete_namespaced_job(
                container_id, self.namespace, propagation_policy="Background", grace_period_seconds=0,
                _request_timeout=API_TIMEOUT,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise _translate(exc, "delete a Job") from None
        except (HTTPError, OSError) as exc:
            raise _translate(exc, "delete a Job") from None
        # The Job's pods go with it in the background; a pod left by a crash is deleted by label too.
        with contextlib.suppress(BackendError):
            self._call(
                "delete the Job's pods", self.core.delete_collection_namespaced_pod, self.namespace,
                label_selector=f"job-name={container_id}", grace_period_seconds=0,
            )  # fmt: skip

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        jobs = self._call("list Jobs", self.batch.list_namespaced_job, self.namespace, label_selector=selector)
        return {str(job.metadata.name): dict(job.metadata.labels or {}) for job in jobs.items}
