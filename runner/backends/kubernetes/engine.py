"""The Kubernetes engine: each container a `batch/v1` Job (runner.backends.kubernetes.job), its mounts moved in
and out as tar (runner.backends.kubernetes.transfer), its services over an exec tunnel
(runner.backends.kubernetes.tunnel).

A pod can take long to start: it may wait for a node (up to the pending timeout), for its image to be pulled
and for its mounts to arrive (up to the transfer allowance), twenty minutes and more. That start runs in a
thread of its own after `start` returns, so that the watchdog's deadline and cancel (`stop --now`) apply to it
as they apply to the command: `wait` says False while it lasts and raises what made it fail, `stop` gives it
up (the command then never runs, and `finish` says so).

So the supervisor and the copy's helpers work unchanged, and the work still comes back as the checkpoint
helper's git bundle, harvested exactly as on Docker.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from runner.backends.base import Backend, ContainerSpec, EngineInfo, Exit, Posture, SessionCapacity
from runner.backends.kubernetes.api import (
    API_FAULTS,
    API_TIMEOUT,
    SHORT_EXEC_SECONDS,
    Aborted,
    run_in_pod,
    translate,
)
from runner.backends.kubernetes.capacity import cluster_capacity, fallback, pod_shape
from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.job import CONTROL, MAIN, SYNC, SYNC_ROOT, job_manifest, job_name
from runner.backends.kubernetes.transfer import TRANSFER_ALLOWANCE_SECONDS, pull, push
from runner.backends.kubernetes.tunnel import Tunnel, open_tunnel
from runner.backends.retry import retry_transient
from runner.base.errors import BackendError, EngineUnavailableError, HarnessError, ImageMissingError
from runner.base.layout import AGENT_UID
from runner.base.output import OutputSink

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
START_GRACE = 300.0  # after the pending timeout: how long a placed pod may take to run (image pulls)
PULL_FAILURES = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName")
_STOP = 'kill -s TERM -- -1; i=0; while [ "$i" -lt "$1" ]; do sleep 1; i=$((i+1)); done; kill -s KILL -- -1 || true'


@dataclass
class _Running:
    spec: ContainerSpec
    pod: str = ""
    drain: threading.Thread | None = None
    tunnel: Tunnel | None = None
    failure: str | None = None  # the pod could not run (no node fits)
    vanished: bool = False
    # The start, in its own thread: `started` is set when it has ended, `ran` when it let the command go,
    # `fault` is what ended it otherwise, `abort` is a `stop` (or `remove`) that came while it lasted.
    started: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    ran: bool = False
    fault: HarnessError | None = None


class KubernetesBackend(Backend):
    """An engine with lifecycle and inventory only: the cluster pulls its images (nothing is built or pruned
    here), the copy travels with each pod (no exec into a kept helper), and the metrics API is optional in a
    cluster (the hud shows no sample)."""

    name = "kubernetes"
    start_grace = START_GRACE
    transfer_allowance = TRANSFER_ALLOWANCE_SECONDS  # in the Job's deadline, besides the run's own

    def __init__(self, config: KubernetesConfig) -> None:
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
                raise EngineUnavailableError(f"cannot load the kubeconfig: {exc}") from None
            # Transient faults are retried by `_call`, with the same policy as Docker's: urllib3's own
            # retries would only add attempts and log lines of their own.
            configuration.retries = False
            self._api = k8s.ApiClient(configuration=configuration)
        return self._api

    @property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.api)

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
            except API_FAULTS as exc:
                raise translate(exc, what) from None

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
            raise EngineUnavailableError(f"cannot reach the Kubernetes cluster ({exc.message})") from None
        classes: tuple[str, ...] = ()
        with contextlib.suppress(BackendError):
            found = self._call("list runtime classes", k8s.NodeV1Api(self.api).list_runtime_class)
            classes = tuple(sorted(rc.metadata.name for rc in found.items))
        return EngineInfo(name="kubernetes", version=str(version.git_version), runtimes=("runc", *classes))

    def capacity(self, *, cpus: float, memory_bytes: int) -> SessionCapacity:
        """What the cluster's schedulable nodes hold of a session's pod (runner.backends.kubernetes.capacity): one
        list of the nodes; the documented default when this user may not list them."""
        probe = ContainerSpec(image="capacity", command=["true"], posture=Posture(uid=AGENT_UID, gid=AGENT_UID),
                              workdir="/", cpus=cpus, memory_bytes=memory_bytes, pids=1)  # fmt: skip
        pod = pod_shape(self._job(probe, "capacity"))
        try:
            nodes = self._call("list the cluster's nodes", self.core.list_node).items
        except HarnessError as exc:
            found = fallback(exc.message)
            log.warning("%s; give --slots N for another cap", found.basis)
            return found
        found, left_out = cluster_capacity(nodes, pod)
        for why in left_out:
            log.info("node %s does not count for the default cap", why)
        return found

    # -- what is submitted ----------------------------------------------------------------------

    def submission(self, spec: ContainerSpec) -> dict[str, object]:
        return dict(self.api.sanitize_for_serialization(self._job(spec, job_name(spec, "NAME"))))

    def _job(self, spec: ContainerSpec, name: str) -> Any:
        return job_manifest(
            spec, name, namespace=self.namespace, config=self.config, transfer_allowance=self.transfer_allowance
        )

    # -- the start --------------------------------------------------------------------------------

    def start(self, spec: ContainerSpec, output: OutputSink) -> str:
        """Create the Job and return its name; the pod's start goes on in a thread (the module's docstring)."""
        name = job_name(spec, uuid.uuid4().hex[:10])
        self._create("create a Job", self.batch.create_namespaced_job, self.namespace, self._job(spec, name))
        running = _Running(spec=spec)
        self._running[name] = running
        threading.Thread(
            target=self._start, args=(name, running, output), name=f"harness-k8s-start-{name}", daemon=True
        ).start()
        return name

    def _start(self, job: str, running: _Running, output: OutputSink) -> None:
        """Wait for the pod, send the mounts, open the tunnel and the log, then let the command go; or end
        with `running.failure` (no node takes the pod), `running.fault`, or nothing when aborted."""
        spec = running.spec
        try:
            running.pod = self._await_pod(job, running)
            if running.failure is None:
                for i, mount in enumerate(spec.mounts):
                    push(self.api, self.namespace, running.pod, mount.source, f"{SYNC_ROOT}/m{i}", abort=running.abort)
                if spec.services:
                    running.tunnel = open_tunnel(self.api, self.namespace, running.pod, SYNC, spec, abort=running.abort)
                drain = threading.Thread(target=self._drain, args=(running.pod, output), daemon=True)
                drain.start()
                running.drain = drain
                if not running.abort.is_set():  # else a stop came meanwhile: the command never runs
                    self._exec(running.pod, SYNC, ["touch", f"{CONTROL}/ready"], what="start the command")
                    running.ran = True
        except Aborted:
            log.info("Job %s: stopped before its command ran", job)
        except HarnessError as exc:
            running.fault = exc
        except Exception as exc:  # anything else ends the start as a fault, never as a silent hang
            running.fault = BackendError(f"starting Job {job}: {exc.__class__.__name__}: {exc}")
        finally:
            running.started.set()

    def _await_pod(self, job: str, running: _Running) -> str:
        """The Job's pod once both containers run; a pod no node takes ends as a failure."""
        pending_since = time.monotonic()
        while True:
            if running.abort.is_set():
                raise Aborted
            pods = self._call(
                "find the Job's pod", self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={job}"
            ).items
            if pods:
                pod = pods[0]
                failure = self._unschedulable(pod)
                if failure and time.monotonic() - pending_since > self.config.pending_timeout:
                    running.failure = failure
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
                if not failure and time.monotonic() - pending_since > self.config.pending_timeout + self.start_grace:
                    # Placed but never running (a volume that does not mount, a node that does not answer).
                    waits = [f"{s.name}: {s.state.waiting.reason}" for s in statuses if s.state and s.state.waiting]
                    raise BackendError(f"the pod of Job {job} did not start: {', '.join(waits) or pod.status.phase}")
            elif time.monotonic() - pending_since > self.config.pending_timeout + self.start_grace:
                raise BackendError(f"Job {job} made no pod (a quota, or an admission policy that refuses it?)")
            running.abort.wait(POLL_SECONDS)

    @staticmethod
    def _unschedulable(pod: Any) -> str | None:
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                return f"no node can run it: {condition.message}"
        return None

    def _exec(self, pod: str, container: str, command: list[str], *, what: str, stdout: Path | None = None,
              timeout: float = SHORT_EXEC_SECONDS) -> None:  # fmt: skip
        run_in_pod(self.api, self.namespace, pod, container, command, what=what, stdout=stdout, timeout=timeout)

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

    # -- the run ----------------------------------------------------------------------------------

    def _pod(self, container_id: str) -> Any:
        running = self._running.get(container_id)
        name = running.pod if running is not None else None
        if not name:
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
            raise translate(exc, "read the pod") from None
        except API_FAULTS as exc:
            raise translate(exc, "read the pod") from None

    @staticmethod
    def _main_state(pod: Any) -> Any:
        for status in pod.status.container_statuses or []:
            if status.name == MAIN and status.state is not None:
                return status.state
        return None

    def wait(self, container_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        running = self._running.get(container_id)
        if running is not None:
            if not running.started.wait(timeout):
                return False  # still starting
            if running.fault is not None:
                raise running.fault
            if running.failure is not None or not running.ran:
                return True  # it cannot run, or it was stopped before it ran
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
        if running is None or not running.ran:
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
        if running is not None and not running.started.is_set():
            running.abort.set()  # the start gives up at its next look (within a second, or an API call)
            running.started.wait(grace + SHORT_EXEC_SECONDS)
        if running is not None and not running.ran:
            return  # the command never ran: nothing to signal
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
        if running is not None and not running.ran:
            return Exit(exit_code=None, ran=False)  # stopped while it started: nothing of it to collect
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
                    pull(self.api, self.namespace, running.pod, f"{SYNC_ROOT}/m{i}", mount.source)
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
        if running is not None:
            running.abort.set()  # a start still going gives up
            if running.tunnel is not None:
                running.tunnel.close()
        try:
            self.batch.delete_namespaced_job(
                container_id, self.namespace, propagation_policy="Background", grace_period_seconds=0,
                _request_timeout=API_TIMEOUT,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise translate(exc, "delete a Job") from None
        except API_FAULTS as exc:
            raise translate(exc, "delete a Job") from None
        # The Job's pods go with it in the background; a pod left by a crash is deleted by label too.
        with contextlib.suppress(BackendError):
            self._call(
                "delete the Job's pods", self.core.delete_collection_namespaced_pod, self.namespace,
                label_selector=f"job-name={container_id}", grace_period_seconds=0,
            )  # fmt: skip

    # -- inventory --------------------------------------------------------------------------------

    def list_containers(self, labels: dict[str, str]) -> dict[str, dict[str, str]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        jobs = self._call("list Jobs", self.batch.list_namespaced_job, self.namespace, label_selector=selector)
        return {str(job.metadata.name): dict(job.metadata.labels or {}) for job in jobs.items}
