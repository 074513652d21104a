"""Capped capture of container output: drained continuously, cut at a byte cap with a marker."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol

TRUNCATION_MARKER = "\n[harness: output truncated at {cap} bytes; {dropped} more bytes dropped]\n"

# CSI/OSC/other escape sequences and C0 controls except tab and newline: neutralised before
# anything the agent wrote reaches a terminal.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f\x9b]")


def neutralise(text: str) -> str:
    """Make agent-written text safe to print in a terminal (escape sequences made visible)."""
    return _ESCAPES.sub(lambda m: repr(m.group(0))[1:-1], text)


class OutputSink(Protocol):
    def write(self, chunk: bytes) -> None: ...


class CappedFile:
    """Writes chunks to a file until `cap` bytes, then counts what it drops (keeps draining).

    Each chunk goes to the file with one unbuffered write as it arrives, so `logs --follow` and the
    hud see an agent's output while it runs; no fsync (a flood must stay cheap)."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self.error: OSError | None = None  # the first write that failed (a full disk): the rest is dropped
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None  # noqa: S101 - never called after close
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def write(self, chunk: bytes) -> None:
        with self._lock:
            room = self.cap - self.written
            if room > 0 and self.error is None and self._fd is not None:
                part = chunk[:room]
                try:
                    self._write_all(part)
                except OSError as exc:
                    self.error = exc
                    self.dropped += len(chunk)
                    return
                self.written += len(part)
                self.dropped += len(chunk) - len(part)
            else:
                self.dropped += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                if self.dropped and self.error is None:
                    self._write_all(TRUNCATION_MARKER.format(cap=self.cap, dropped=self.dropped).encode())
            except OSError as exc:
                self.error = self.error or exc
            finally:
                os.close(self._fd)
                self._fd = None


class CappedBuffer:
    """In-memory sink for helper containers' output (diagnostics only)."""

    def __init__(self, cap: int = 64 * 1024) -> None:
        self.cap = cap
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data.extend(chunk[:room])

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")
