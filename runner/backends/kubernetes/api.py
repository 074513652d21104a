"""What every part of the Kubernetes engine needs of the cluster's API: its faults in the harness's words, and a
command run in a container of a pod over the API's exec stream (the transfer, the stop, a disk measure).

The API server of Kubernetes 1.20 negotiates `v4.channel.k8s.io`, whose stdin has no end-of-input
(docs/k8s-lab.md): a command reads a known number of bytes, never "until the end".
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as k8s_stream
from urllib3.exceptions import HTTPError

from runner.base.errors import BackendError, TransientBackendError

API_TIMEOUT = 60  # seconds for one API call (not for waiting on a pod)
API_FAULTS = (ApiException, HTTPError, OSError)
SHORT_EXEC_SECONDS = 30.0  # a touch, a du: never a transfer
MAX_TRANSFER_BYTES = 16 * 1024**3
CHUNK = 1024 * 1024


class Aborted(Exception):
    """The start of a container was given up: `stop` came while it was starting."""


def translate(exc: Exception, what: str) -> BackendError:
    """An API or transport error as the harness's own: 5xx and 429 are worth retrying."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        message = f"{what}: Kubernetes API error {status}: {exc.reason}"
        return TransientBackendError(message) if status >= 500 or status == 429 else BackendError(message)
    return TransientBackendError(f"{what}: lost the Kubernetes API ({exc.__class__.__name__}: {exc})")


def open_exec(api: Any, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool, what: str) -> Any:
    """An exec stream of `command` in `container` of `pod`, binary, not yet read. A client of its own for each:
    the client's `stream` swaps its ApiClient's request method for the websocket one while it connects, which
    would derail any other thread's calls on a shared one."""
    own = k8s.CoreV1Api(k8s.ApiClient(configuration=api.configuration))
    try:
        return k8s_stream(
            own.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=command,
            stdin=stdin, stdout=True, stderr=True, tty=False, _preload_content=False, binary=True,
        )  # fmt: skip
    except API_FAULTS as exc:
        raise translate(exc, what) from None


def run_in_pod(
    api: Any, namespace: str, pod: str, container: str, command: list[str], *, what: str, stdin: Path | None = None,
    stdout: Path | None = None, timeout: float | None = SHORT_EXEC_SECONDS, abort: threading.Event | None = None,
) -> None:  # fmt: skip
    """Run `command` in `container` of `pod` to its end, feeding it the file `stdin` and keeping its stdout in the
    file `stdout`; given up after `timeout` seconds (a stream into a pod that vanished may never close), and
    with `Aborted` as soon as `abort` is set. Raises BackendError when it exits non-zero, with its last lines."""
    deadline = time.monotonic() + timeout if timeout is not None else math.inf
    resp = open_exec(api, namespace, pod, container, command, stdin=stdin is not None, what=what)
    errors = bytearray()
    received = 0
    try:
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(stdout.open("wb")) if stdout is not None else None
            if stdin is not None:
                with stdin.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        if abort is not None and abort.is_set():
                            raise Aborted
                        resp.write_stdin(chunk)
            # Each look at a channel takes whatever frames have arrived, the close included: the last of stdout
            # may come in with the look at stderr. So the channels are read once more after the close.
            while True:
                closed = not resp.is_open()
                if not closed:
                    if abort is not None and abort.is_set():
                        raise Aborted
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
                if closed:
                    break
        code = resp.returncode
    finally:
        resp.close()
    if code != 0:
        tail = errors.decode("utf-8", "replace").strip().splitlines()[-3:] or [f"exit {code}"]
        raise BackendError(f"{what}: {' | '.join(tail)}")
