"""`run_in_pod` (runner/backends/kubernetes/api.py) reads every byte a command in a pod wrote, whichever of the
client's calls happened to take the last frames off the socket.

The client's exec stream (kubernetes.stream.ws_client.WSClient) moves frames from the socket into its channels'
buffers in every `update`, and `peek_stdout` / `peek_stderr` call `update` themselves: the last frames of a
command's stdout can arrive in the stderr look, together with the close. Read only while the stream is open,
they were left in the buffer, and a tar collected from a pod ended early ("unexpected end of data", seen on the
k8s lab under load). The stand-in below hands out frames per `update` call as the real one reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.backends.kubernetes import api as k8s_api
from runner.base.errors import BackendError

STDOUT, STDERR = 1, 2
CLOSE = "close"


class ScriptedExec:
    """An exec stream whose `update` calls deliver the given batches of frames, one batch per call."""

    def __init__(self, batches: list[list[Any]], code: int = 0) -> None:
        self.batches = batches
        self.code = code
        self.connected = True
        self.channels: dict[int, bytes] = {}
        self.updates = 0

    def is_open(self) -> bool:
        return self.connected

    def update(self, timeout: float = 0) -> None:
        if not self.connected:
            return
        self.updates += 1
        for frame in self.batches.pop(0) if self.batches else []:
            if frame == CLOSE:
                self.connected = False
                return
            channel, data = frame
            self.channels[channel] = self.channels.get(channel, b"") + data

    def _peek(self, channel: int) -> bytes:
        self.update(0)
        return self.channels.get(channel, b"")

    def _read(self, channel: int) -> bytes:
        if channel not in self.channels:
            return self._peek(channel)
        return self.channels.pop(channel)

    def peek_stdout(self, timeout: float = 0) -> bytes:
        return self._peek(STDOUT)

    def read_stdout(self, timeout: float | None = None) -> bytes:
        return self._read(STDOUT)

    def peek_stderr(self, timeout: float = 0) -> bytes:
        return self._peek(STDERR)

    def read_stderr(self, timeout: float | None = None) -> bytes:
        return self._read(STDERR)

    def write_stdin(self, data: bytes) -> None:
        raise AssertionError("no stdin in these tests")

    @property
    def returncode(self) -> int | None:
        return None if self.connected else self.code

    def close(self) -> None:
        self.connected = False


def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stream: ScriptedExec) -> bytes:
    monkeypatch.setattr(k8s_api, "open_exec", lambda *args, **kwargs: stream)
    out = tmp_path / "out"
    k8s_api.run_in_pod(None, "ns", "pod", "sync", ["tar"], what="collecting", stdout=out)
    return out.read_bytes()


def test_the_last_stdout_frames_taken_by_the_stderr_look_are_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The loop's update: the first part; the stdout look: nothing more; the stderr look: the rest and the close.
    stream = ScriptedExec([[(STDOUT, b"first ")], [], [(STDOUT, b"last"), CLOSE]])
    assert run(monkeypatch, tmp_path, stream) == b"first last"
    assert not stream.batches  # every frame was delivered: the stand-in was driven as the real stream is


def test_frames_that_arrive_with_the_close_in_the_loops_update_are_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control: this order was read in full before."""
    stream = ScriptedExec([[(STDOUT, b"first ")], [], [], [(STDOUT, b"last"), CLOSE]])
    assert run(monkeypatch, tmp_path, stream) == b"first last"


def test_stderr_that_arrives_with_the_close_is_in_the_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stream = ScriptedExec([[(STDOUT, b"part")], [], [(STDERR, b"tar: short read\n"), CLOSE]], code=2)
    with pytest.raises(BackendError, match=r"^collecting: tar: short read$"):
        run(monkeypatch, tmp_path, stream)
