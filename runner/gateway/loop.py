"""One asyncio event loop in a daemon thread, for the host-side servers of a session.

The supervisor is synchronous; its servers (model gateway, egress proxy) are asyncio. It starts
one ServerThread, hands it each server with `serve()`, and `stop()` closes them all in reverse
order before the loop ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_TIMEOUT = 30.0  # seconds for one call into the loop (starting a server, reading totals)
STOP_TIMEOUT = 10.0
SUN_PATH_MAX = 107  # bytes of a Unix socket path (sun_path less its NUL)


class AsyncServer(Protocol):
    """What `serve()` accepts: started and closed from inside the loop."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ServerThread:
    """An event loop running in a daemon thread; safe to call into from any other thread."""

    def __init__(self, name: str = "harness-servers") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[AsyncServer] = []
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the server thread is not running")
        return self._loop

    def start(self) -> None:
        """Start the loop and return once it runs. Starting twice is an error."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the server thread was already started")
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_log_loop_exception)
            running = threading.Event()
            loop.call_soon(running.set)
            self._loop = loop
            self._thread = threading.Thread(target=self._run, args=(loop,), name=self._name, daemon=True)
            self._thread.start()
        if not running.wait(CALL_TIMEOUT):
            raise RuntimeError("the server thread did not start")

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float = CALL_TIMEOUT) -> T:
        """Run `coro` in the loop and return its result (or raise its exception).

        Raises TimeoutError after `timeout` seconds (the coroutine is cancelled) and RuntimeError
        when the thread is not running. Never call it from inside the loop itself."""
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()
            raise
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("ServerThread.call from inside its own loop would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"a call into {self._name} took longer than {timeout:g}s") from None

    def serve(self, server: AsyncServer, *, timeout: float = CALL_TIMEOUT) -> None:
        """Start `server` in the loop; `stop()` will close it. Raises what its start() raises."""
        self.call(server.start(), timeout=timeout)
        with self._lock:
            self._servers.append(server)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Close the served servers (newest first), cancel what is left, end the loop, join.

        Idempotent; a server that fails to close is logged, never raised."""
        with self._lock:
            loop, thread, servers = self._loop, self._thread, self._servers[::-1]
            self._servers = []
        if loop is None or thread is None:
            return
        if thread.is_alive() and not loop.is_closed():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(_shutdown(servers), loop).result(timeout)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        if not thread.is_alive() and not loop.is_closed():
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _shutdown(servers: list[AsyncServer]) -> None:
    for server in servers:
        try:
            await server.close()
        except Exception as exc:
            log.warning("closing %s failed: %s", type(server).__name__, exc)
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A fault of one connection is not the supervisor's business; keep it out of its output.
    log.debug("server loop: %s", context.get("message"), exc_info=context.get("exception"))


def bind_unix_socket(path: Path, *, mode: int = 0o666) -> socket.socket:
    """A listening Unix socket at `path`, whatever the length of the path, readable by `mode`.

    A socket left by a killed supervisor is replaced; any other file there is an OSError. Paths
    longer than sun_path are bound through the directory's /proc/self/fd entry (Linux)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= SUN_PATH_MAX:
            sock.bind(str(path))
        else:
            dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
            finally:
                os.close(dir_fd)
        # The agent's uid is not ours: it must be able to connect (the directory is the guard).
        path.chmod(mode)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
