"""The policy of one container run, the same for every backend: a deadline, a cancel request and a
disk watch, checked between waits; a stop that escalates; the container always removed.

Engines only start, wait, measure, stop, report and remove (`Lifecycle`, runner.backends.base).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from runner.backends.base import ContainerResult, ContainerSpec, Lifecycle
from runner.base.errors import HarnessError
from runner.base.output import OutputSink

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often the watchdogs look between waits
STOP_SETTLE_SECONDS = 30.0  # after the stop's grace: how long the engine gets to report the end


def run_container(
    backend: Lifecycle,
    spec: ContainerSpec,
    *,
    timeout: float,
    output: OutputSink,
    stop_grace: float = 10.0,
    cancel: Callable[[], bool] | None = None,
) -> ContainerResult:
    """Start a container, drain its output into `output`, wait at most `timeout` seconds, and stop it
    early (SIGTERM, then SIGKILL after `stop_grace`) when `cancel()` turns true or its disk watch
    fires; record how it ended and remove it. Engine faults raise BackendError; what the command
    did is in the result."""
    spec = replace(spec, deadline_seconds=timeout)
    container_id = backend.start(spec, output)
    try:
        started = time.monotonic()
        ended = _watch(backend, container_id, spec, started + timeout, cancel)
        if ended != "exited":
            log.warning("stopping container %s: %s", container_id[:12], ended)
            backend.stop(container_id, grace=stop_grace)
            backend.wait(container_id, stop_grace + STOP_SETTLE_SECONDS)
        duration = time.monotonic() - started
        how = backend.finish(container_id)
        return ContainerResult(
            container_id=container_id,
            exit_code=how.exit_code,
            timed_out=ended == "timed out",
            oom_killed=how.oom_killed,
            duration_seconds=duration,
            disk_exceeded=ended == "disk limit",
            cancelled=ended == "cancelled",
            failure=how.failure,
            ran=how.ran,
        )
    finally:
        backend.remove_or_leave(container_id)


def _watch(
    backend: Lifecycle, container_id: str, spec: ContainerSpec, deadline: float, cancel: Callable[[], bool] | None
) -> str:
    """Wait in slices, checking the watchdogs between them; say why the wait ended."""
    interval = spec.disk_watch.interval if spec.disk_watch else POLL_SECONDS
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timed out"
        if backend.wait(container_id, min(interval, left) if (cancel or spec.disk_watch) else left):
            return "exited"
        if cancel is not None and cancel():
            return "cancelled"
        if spec.disk_watch and _disk_usage_within(backend, container_id, spec, deadline - time.monotonic()) > (
            spec.disk_watch.limit_bytes
        ):
            return "disk limit"


def _disk_usage_within(backend: Lifecycle, container_id: str, spec: ContainerSpec, seconds: float) -> int:
    """The disk measure, abandoned (0) when it outlasts `seconds`: inside a sandbox under attack (a fork
    bomb under gVisor) one `du` took 24 s, and the watchdog's deadline must not wait for it."""
    assert spec.disk_watch is not None  # noqa: S101 - only called with a watch
    watch = spec.disk_watch
    found: list[int | None] = []

    def measure() -> None:
        try:
            found.append(backend.disk_usage(container_id, watch.path, spec.user))
        except HarnessError:
            found.append(None)

    probe = threading.Thread(target=measure, daemon=True)
    probe.start()
    probe.join(max(0.0, seconds))
    return (found[0] or 0) if found else 0
