"""The resident helper's bookkeeping, on the fake backend: when the container is kept, replaced or removed.
What it does inside a real container is tested in tests/security/test_resident_attacks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.fake import FakeBackend, FakeCluster, FakeRun
from runner.backends.watchdog import run_container
from runner.base.errors import BackendError, TransientBackendError
from runner.base.output import CappedBuffer
from runner.loop.resident import ResidentHelper
from runner.loop.workspace import RunDir, Workspace
from runner.record.models import Limits
from runner.sandbox.container import hardened_spec, labels
from tests.unit.fake_copy import with_helpers


def _helper(backend: FakeBackend) -> ResidentHelper:
    spec = hardened_spec(image="harness-base:latest", command=["sh", "-c", "x"], limits=Limits(), mounts=(),
                         labels=labels("s", "k", "helper"), workdir="/tmp")  # fmt: skip
    return ResidentHelper(backend, spec)


def _sweeps(backend: FakeBackend) -> int:
    return sum(1 for _, command, _ in backend.execs if "kill -9 -1" in command[-1])


def test_one_container_serves_every_clean_checkpoint_and_goes_with_close() -> None:
    backend = FakeBackend(behaviour=with_helpers())
    helper = _helper(backend)
    for n in range(3):
        assert helper.run(f"echo {n}", {"N": str(n)}, CappedBuffer(), 10) == 0
    assert len(backend.runs) == 1 and _sweeps(backend) == 3
    started = backend.runs[0]
    assert started.command[:2] == ["python3", "-c"] and not started.posture.init  # our init is pid 1
    helper.close()
    assert backend.existing == {}
    helper.close()  # idempotent


def test_a_sweep_that_does_not_end_clean_removes_the_container() -> None:
    backend = FakeBackend(
        behaviour=with_helpers(),
        on_exec=lambda command, env: FakeRun(exit_code=2 if "kill -9 -1" in command[-1] else 0),
    )
    helper = _helper(backend)
    assert helper.run("true", {}, CappedBuffer(), 10) == 0  # the checkpoint's own result stands
    assert helper.container_id is None and backend.existing == {}
    helper.run("true", {}, CappedBuffer(), 10)
    assert len(backend.runs) == 2  # a fresh container for the next checkpoint


def test_a_checkpoint_that_outlives_its_timeout_removes_the_container_unswept() -> None:
    backend = FakeBackend(behaviour=with_helpers())
    helper = _helper(backend)
    backend.on_exec = lambda command, env: FakeRun(hang=True)
    assert helper.run("sleep 999", {}, CappedBuffer(), 10) is None
    assert helper.container_id is None and backend.existing == {} and _sweeps(backend) == 0


def test_a_kept_container_that_broke_is_replaced_once_and_a_fresh_one_that_fails_raises() -> None:
    backend = FakeBackend(behaviour=with_helpers())
    helper = _helper(backend)
    assert helper.run("true", {}, CappedBuffer(), 10) == 0
    backend.remove(str(helper.container_id))  # gone behind the helper's back
    assert helper.run("true", {}, CappedBuffer(), 10) == 0
    assert len(backend.runs) == 2

    def broken(command: list[str], env: dict[str, str]) -> FakeRun:
        raise BackendError("the engine refused the exec")

    backend.on_exec = broken
    with pytest.raises(BackendError):
        helper.run("true", {}, CappedBuffer(), 10)  # kept one fails, the fresh one too: no loop
    assert len(backend.runs) == 3 and helper.container_id is None and backend.existing == {}


def test_a_backend_that_cannot_exec_gets_a_helper_container_per_checkpoint_with_its_inputs(tmp_path: Path) -> None:
    backend = FakeCluster(behaviour=with_helpers())  # no exec, as Kubernetes
    run_dir = RunDir(tmp_path / "run")
    workspace = Workspace(backend=backend, run_dir=run_dir, image="harness-base:latest", limits=Limits(),
                          session="s", repo_key="k")  # fmt: skip
    for n in (1, 2):
        last = f"{n}" * 40
        harvest = workspace.checkpoint_and_harvest(git=None, iteration=n, base="0" * 40, last=last, dest_ref="r")  # type: ignore[arg-type]
        assert harvest.head == last  # the helper answered "nothing new" from the inputs it was given
    assert [spec.env["HARNESS_ITERATION"] for spec in backend.runs] == ["1", "2"]


class _Unremovable(FakeBackend):
    """An engine whose removals fail after their retries (a daemon answering 500)."""

    def remove(self, container_id: str) -> None:
        raise TransientBackendError("remove a container: Docker engine error 500: device or resource busy")


def test_a_container_that_cannot_be_removed_is_left_with_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = _Unremovable(behaviour=with_helpers())
    helper = _helper(backend)
    assert helper.run("true", {}, CappedBuffer(), 10) == 0
    left = helper.container_id
    assert left is not None
    helper.close()  # a clean-up: it does not raise
    spec = hardened_spec(image="harness-base:latest", command=["fake:echo-exit", "hi", "3"], limits=Limits(),
                         mounts=(), labels=labels("s", "k", "agent"), workdir="/tmp")  # fmt: skip
    result = run_container(backend, spec, timeout=10, output=CappedBuffer())
    assert result.exit_code == 3  # what ran is reported, whatever the removal did
    assert backend.reap(labels("s", "k", "agent")) == []  # nothing counted as removed that was not
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "left behind" in r.getMessage()]
    assert [w.split()[1] for w in warned] == [left[:12], result.container_id[:12], result.container_id[:12]]
    assert all(w.endswith("Docker engine error 500: device or resource busy") for w in warned), warned
    assert set(backend.existing) == {left, result.container_id}  # left, with their labels, for resume and gc
