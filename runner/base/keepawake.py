"""Keep the machine awake while a session lives: a sleep inhibitor held by a child process of the supervisor.

Linux: `systemd-inhibit --what=sleep:idle --who=harness --why=... --mode=block CMD` (logind's block lock on
sleep and idle); macOS: `caffeinate -i -s CMD` (no idle sleep, no system sleep on AC power). Elsewhere there is
none the harness knows, and the run goes on without it. CMD says it holds (one line on its stdout: the inhibitor
took the lock before starting it), then waits on the supervisor: it reads a pipe whose only writer is the
supervisor, so it ends, and the inhibitor with it, when the supervisor closes the pipe at the end of the session
or dies (kill -9 included: the kernel closes the pipe). A missing or failing inhibitor is a fact the journal
records ("not held: why"), never a failure of the run.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

# Says it holds, then reads the supervisor's pipe until it closes.
WAITER = ["sh", "-c", "echo held; exec cat >/dev/null"]
HELD = b"held"
START_SECONDS = 10.0  # for the inhibitor to take its lock (or to fail) and start CMD
RELEASE_SECONDS = 5.0


def inhibitor_argv(platform: str, *, who: str, why: str) -> list[str] | None:
    """The inhibitor this platform offers, up to the command it holds the lock for (None: none known)."""
    if platform.startswith("linux"):
        return ["systemd-inhibit", "--what=sleep:idle", f"--who={who}", f"--why={why}", "--mode=block"]
    if platform == "darwin":
        return ["caffeinate", "-i", "-s"]
    return None


@dataclass
class Inhibitor:
    """A held inhibitor: its process, and the pipe whose closing ends it."""

    process: subprocess.Popen[bytes]
    pipe: int  # the write end, held by this process only (not inherited by any other child)

    def release(self, *, grace: float = RELEASE_SECONDS) -> None:
        """Close the pipe (the waiter ends, the inhibitor lets go) and reap it; kill it if it lingers."""
        with contextlib.suppress(OSError):
            os.close(self.pipe)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its own process group: the waiter too
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class Held:
    """What holding the inhibitor came to: `inhibitor` is None when it is not held, and `reason` says why."""

    inhibitor: Inhibitor | None
    via: str | None  # the program: systemd-inhibit, caffeinate
    reason: str | None = None


def hold(*, who: str, why: str, platform: str = sys.platform, timeout: float = START_SECONDS) -> Held:
    """Start the platform's inhibitor for as long as this process lives (or until `release`)."""
    argv = inhibitor_argv(platform, who=who, why=why)
    if argv is None:
        return Held(None, None, f"this system ({platform}) offers no sleep inhibitor the harness knows")
    via = argv[0]
    program = shutil.which(via)
    if program is None:
        return Held(None, via, f"{via} is not on PATH")
    read_end, write_end = os.pipe()  # both non-inheritable: only the waiter's stdin gets the read end
    try:
        process = subprocess.Popen(
            [program, *argv[1:], *WAITER],
            stdin=read_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # the terminal's Ctrl-C is the supervisor's to handle, not the inhibitor's
            close_fds=True,
        )
    except OSError as exc:
        os.close(write_end)
        return Held(None, via, f"{via} could not start: {exc.strerror}")
    finally:
        os.close(read_end)
    inhibitor = Inhibitor(process, write_end)
    answer = _first_line(process, timeout)
    if answer == HELD:
        return Held(inhibitor, via)
    said = b""
    if answer == b"" and process.stderr is not None:  # it ended: what it said about why
        with contextlib.suppress(OSError, ValueError):
            said = process.stderr.read(4096)
    inhibitor.release(grace=0 if answer is None else RELEASE_SECONDS)
    if answer is None:
        return Held(None, via, f"{via} did not take its lock within {timeout:g}s")
    first = said.decode("utf-8", "replace").strip().splitlines()[:1]
    return Held(None, via, f"{via} failed (exit {process.returncode}){': ' + first[0] if first else ''}")


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """The waiter's first line (b'' when the inhibitor ended without starting it; None: no answer in time)."""
    if process.stdout is None:
        return b""
    fd = process.stdout.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 64)
        if not chunk:
            return b""
        got += chunk
    return got.split(b"\n", 1)[0]
