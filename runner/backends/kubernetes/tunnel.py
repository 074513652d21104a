"""The spec's services for a pod, over one exec stream: `harness-relay --mux` in the pod's `sync` container listens
on the pod's loopback (shared with `main`) and carries each connection over the stream to a thread here, which
connects it to the host's Unix socket. The agent's key never enters the cluster: the gateway that adds it runs
here, with the supervisor.

The frames of `harness-relay --mux` (images/base/relay): a header of kind, connection and payload size, then the
payload.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from runner.backends.base import ContainerSpec
from runner.backends.kubernetes.api import Aborted, open_exec
from runner.base.errors import BackendError
from runner.base.layout import RELAY

log = logging.getLogger(__name__)

READY, OPEN, DATA, EOF, CLOSE = 1, 2, 3, 4, 5  # harness-relay --mux frames
HEADER = struct.Struct(">BII")
TUNNEL_READY_SECONDS = 30.0
CHUNK = 1024 * 1024


class Tunnel:
    """One pod's end of the services: the exec stream `resp` (what the Kubernetes client's stream offers, or a
    stand-in) and the host sockets by service name."""

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

    def close(self) -> None:
        """End the stream, and with it every connection."""
        with contextlib.suppress(Exception):
            self.resp.close()

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


def open_tunnel(
    api: Any, namespace: str, pod: str, container: str, spec: ContainerSpec, *, abort: threading.Event | None = None
) -> Tunnel:
    """Start `harness-relay --mux` in `container` of `pod` for the spec's services and the thread that serves it;
    return once the relay listens (`Aborted` as soon as `abort` is set)."""
    listen = [arg for s in spec.services for arg in ("--mux", f"127.0.0.1:{s.port}={s.name}")]
    resp = open_exec(api, namespace, pod, container, [RELAY, *listen], stdin=True, what="open the services' tunnel")
    tunnel = Tunnel(resp, {s.name: s.socket for s in spec.services})
    tunnel.thread.start()
    deadline = time.monotonic() + TUNNEL_READY_SECONDS
    while not tunnel.ready.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
        if abort is not None and abort.is_set():
            tunnel.close()
            raise Aborted
        if time.monotonic() >= deadline:
            break
    if not tunnel.ready.is_set() or not resp.is_open():
        errors = resp.read_stderr() if resp.is_open() else b""
        resp.close()
        detail = errors.decode("utf-8", "replace").strip() or f"does the image {spec.image} have {RELAY}?"
        raise BackendError(f"the services' tunnel did not start: {detail}")
    return tunnel
