"""Attack row 4: exhaust the host's resources from inside the agent container.

Each attack runs the real `harness run --agent-cmd` under both runtimes and checks three things: the
limit held (the host stayed responsive, the bytes or processes were capped), the iteration outcome in the
journal names what happened, and nothing of the session (container, process) outlives the run.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.container import host_task_limit
from tests.helpers import GitRepo, Result, containers
from tests.security.conftest import iteration, run_agent

pytestmark = pytest.mark.docker

MiB = 1024**2
OUTPUT_CAP = 8 * MiB  # Limits.output_cap_bytes default
STOP_GRACE = 10.0  # supervisor.STOP_GRACE_SECONDS: docker stop's SIGTERM-to-SIGKILL wait
REPORT = """printf '{"state": "%s", "summary": "%s"}' > "$HARNESS_STATUS_FILE" """


def _report(state: str = "done", summary: str = "attack over") -> str:
    return REPORT % (state, summary)


def _iteration(repo: GitRepo, session: str) -> dict[str, Any]:
    return iteration(repo, session)


def _session(kind: str, runtime: str) -> str:
    return f"ra-{kind}-{runtime}-{uuid.uuid4().hex[:6]}"


def _marker() -> str:
    """A sleep duration no other process on this host carries: `sleep 600.<random>`."""
    return f"600.{random.randrange(10**8, 10**9)}"


def _host_processes(needle: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if needle in line]


def _agent_container(session: str, run: Future[Result], limit: float = 60.0) -> str | None:
    """The full id of the session's running agent container, once it is up (None if the run ended first)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not run.done():
        out = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=io.solo-harness.session={session}",
             "--filter", "label=io.solo-harness.role=agent", "--filter", "status=running"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if out:
            return out[0]
        time.sleep(0.2)
    return None


def _cgroup_read(cid: str, candidates: tuple[str, ...]) -> str | None:
    """The first readable cgroup file among `candidates` (cgroup v1 and v2, cgroupfs and systemd drivers)."""
    for pattern in candidates:
        try:
            return Path(pattern.format(id=cid)).read_text()
        except OSError:
            continue
    return None


def _cpu_seconds(cid: str) -> float | None:
    v1 = _cgroup_read(
        cid,
        (
            "/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage",
            "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage",
            "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{id}.scope/cpuacct.usage",
        ),
    )
    if v1 is not None:
        return int(v1) / 1e9
    v2 = _cgroup_read(
        cid, ("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat", "/sys/fs/cgroup/docker/{id}/cpu.stat")
    )
    if v2 is not None:
        found = re.search(r"^usage_usec (\d+)$", v2, re.MULTILINE)
        return int(found.group(1)) / 1e6 if found else None
    return None


def _pids(cid: str) -> tuple[int, str] | None:
    """(pids.current, pids.max) of the container's cgroup, or None once it is gone."""
    for base in ("/sys/fs/cgroup/pids/docker/{id}", "/sys/fs/cgroup/pids/system.slice/docker-{id}.scope",
                 "/sys/fs/cgroup/system.slice/docker-{id}.scope", "/sys/fs/cgroup/docker/{id}"):  # fmt: skip
        current = _cgroup_read(cid, (base + "/pids.current",))
        maximum = _cgroup_read(cid, (base + "/pids.max",))
        if current is not None and maximum is not None:
            return int(current), maximum.strip()
    return None


def _timed(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    return time.monotonic() - started


def _during_run(
    repo: GitRepo, session: str, script: str, runtime: str, *extra: str, probe: Callable[[str], None], timeout: float
) -> Result:
    """Run the attack in a thread; call `probe(container_id)` on the host while the agent is running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        run = pool.submit(run_agent, repo, session, script, runtime, *extra, timeout=timeout)
        cid = _agent_container(session, run)
        if cid is not None:
            probe(cid)
        return run.result()


def _assert_nothing_outlives(session: str, container_id: object, marker: str | None = None) -> None:
    assert containers(f"io.solo-harness.session={session}") == []
    assert isinstance(container_id, str) and container_id
    # No shim, sandbox (runsc) or leftover process of the agent's container on the host.
    assert _host_processes(container_id) == []
    if marker is not None:
        assert _host_processes(marker) == []


# --- processes ----------------------------------------------------------------------------------------------


@pytest.mark.attack(row=4, name="fork bomb (--pids 100)")
def test_fork_bomb_is_capped_and_stopped(repo: GitRepo, runtime: str) -> None:
    session = _session("fork", runtime)
    # bash retries failed forks, so the main process outlives the bomb's first wave and the watchdog ends it.
    script = "echo BOMB; exec bash -c ':(){ :|:& };:; while :; do sleep 1; done'"
    seen: dict[str, Any] = {}

    def probe(cid: str) -> None:
        time.sleep(2)  # let the bomb reach the cap
        seen["pids"] = _pids(cid)
        seen["git"] = _timed(["git", "--version"])
        seen["sh"] = _timed(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done"])

    started = time.monotonic()
    r = _during_run(repo, session, script, runtime, "--pids", "100", "--iteration-timeout", "5s",
                    probe=probe, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - started

    assert elapsed < 5 + STOP_GRACE + 45, elapsed
    assert r.code == 21, r.stderr
    record = _iteration(repo, session)
    if runtime == "runc":
        assert record["outcome"] == "timed-out" and record["timedOut"] is True, record
        assert record["failureClass"] == "timeout", record
        # The kernel held the cap while the bomb ran, and the host kept forking normally.
        assert seen.get("pids") is not None, seen
        current, maximum = seen["pids"]
        assert maximum == "100" and 0 < current <= 100, seen
    else:
        # Under gVisor the engine's cap counts the sandbox's host threads, so --pids N is scaled to
        # host_task_limit(N): the bomb is held there (or kills its own sandbox) and the watchdog ends it.
        assert record["outcome"] in {"timed-out", "agent-error"}, record
        if record["outcome"] == "agent-error":
            assert record["exitCode"] != 0 and record["failureClass"] == "exit-nonzero", record
        if seen.get("pids") is not None:
            current, maximum = seen["pids"]
            assert maximum == str(host_task_limit(100, "runsc")) and current <= int(maximum), seen
    if "git" in seen:
        assert seen["git"] < 2.0 and seen["sh"] < 2.0, seen
    _assert_nothing_outlives(session, record["containerId"])


def test_pids_cap_leaves_room_for_an_ordinary_agent(repo: GitRepo, runtime: str) -> None:
    """Positive control of the fork bomb: 20 processes at once are well inside --pids 100."""
    session = _session("procs", runtime)
    marker = _marker()
    script = f'for i in $(seq 20); do sleep {marker} & pids="$pids $!"; done\n'
    script += "sleep 1; echo RUNNING $(pgrep -c -x sleep)\n"
    script += f"kill $pids; wait; {_report('done', 'twenty processes')}"  # its own children, by pid
    r = run_agent(repo, session, script, runtime, "--pids", "100", "--iteration-timeout", "60s", timeout=120)

    assert r.code == 0, r.stderr
    record = _iteration(repo, session)
    assert record["outcome"] == "done", (record, (repo.journal(session) / "iteration-0001.log").read_text())
    assert "RUNNING 20" in (repo.journal(session) / "iteration-0001.log").read_text()
    _assert_nothing_outlives(session, record["containerId"], marker)


@pytest.mark.attack(row=4, name="ignore SIGTERM and sleep past the iteration timeout")
def test_sigterm_ignoring_sleeper_is_killed_after_the_grace(repo: GitRepo, runtime: str) -> None:
    session = _session("term", runtime)
    marker = _marker()
    script = f"trap '' TERM; echo TRAPPED; sleep {marker}"
    started = time.monotonic()
    r = run_agent(repo, session, script, runtime, "--iteration-timeout", "3s", timeout=120)
    elapsed = time.monotonic() - started

    assert r.code == 21, r.stderr
    record = _iteration(repo, session)
    assert record["outcome"] == "timed-out" and record["timedOut"] is True, record
    assert record["failureClass"] == "timeout", record
    # Stopped at the timeout, killed at the end of the grace: not earlier (it ignored SIGTERM), not later.
    assert record["exitCode"] == 128 + 9, record  # SIGKILL: SIGTERM alone did not end it
    assert 3 <= float(record["durationSeconds"]) <= 3 + STOP_GRACE + 8, record
    assert elapsed < 3 + STOP_GRACE + 40, elapsed
    assert "TRAPPED" in (repo.journal(session) / "iteration-0001.log").read_text()
    _assert_nothing_outlives(session, record["containerId"], marker)


@pytest.mark.attack(row=4, name="leave a setsid daemon behind")
def test_setsid_daemon_does_not_outlive_the_run(repo: GitRepo, runtime: str) -> None:
    session = _session("daemon", runtime)
    marker = _marker()
    script = f"setsid sh -c 'sleep {marker}' & sleep 4; echo DAEMON-STARTED; {_report('done', 'left a daemon')}"
    seen: list[str] = []

    def probe(cid: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            seen.extend(p for p in _host_processes(marker) if p.split()[1:] == ["sleep", marker])
            time.sleep(0.2)

    r = _during_run(repo, session, script, runtime, "--iteration-timeout", "60s", probe=probe, timeout=120)

    assert r.code == 0, r.stderr
    record = _iteration(repo, session)
    assert record["outcome"] == "done", record
    assert "DAEMON-STARTED" in (repo.journal(session) / "iteration-0001.log").read_text()
    if runtime == "runc":
        # Positive control: under runc the daemon is a host process, so the check below can see one.
        assert seen, "the daemon never showed up in the host's process list"
    _assert_nothing_outlives(session, record["containerId"], marker)


# --- memory and CPU -----------------------------------------------------------------------------------------

MEMORY_BOMB = """echo MEMORY
python3 - <<'PY'
chunks = []
while True:
    chunks.append(b"x" * (8 << 20))  # written, so every page is really used
PY
"""


@pytest.mark.attack(row=4, name="memory bomb (--memory 128m)")
def test_memory_bomb_is_oom_killed(repo: GitRepo, runtime: str) -> None:
    session = _session("mem", runtime)
    r = run_agent(repo, session, MEMORY_BOMB, runtime, "--memory", "128m", "--iteration-timeout", "60s",
                  timeout=120)  # fmt: skip

    assert r.code == 21, r.stderr
    record = _iteration(repo, session)
    # Under runc the kernel kills python inside the container; under runsc it kills the sandbox. The
    # engine reports an OOM kill of the container either way, and that outranks everything else.
    assert record["outcome"] == "oom-killed" and record["oomKilled"] is True, record
    assert record["failureClass"] == "oom" and record["timedOut"] is False, record
    assert float(record["durationSeconds"]) < 60, record
    _assert_nothing_outlives(session, record["containerId"])


@pytest.mark.attack(row=4, name="CPU spin (--cpus 0.5)")
def test_cpu_spin_is_throttled_and_timed_out(repo: GitRepo, runtime: str) -> None:
    session = _session("cpu", runtime)
    script = "echo SPIN; while :; do :; done"
    seen: dict[str, Any] = {}

    def probe(cid: str) -> None:
        time.sleep(1.0)
        first, t0 = _cpu_seconds(cid), time.monotonic()
        seen["git"] = _timed(["git", "--version"])
        time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
        last, t1 = _cpu_seconds(cid), time.monotonic()
        if first is not None and last is not None:
            seen["share"] = (last - first) / (t1 - t0)

    started = time.monotonic()
    r = _during_run(repo, session, script, runtime, "--cpus", "0.5", "--iteration-timeout", "8s",
                    probe=probe, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - started

    assert r.code == 21, r.stderr
    record = _iteration(repo, session)
    assert record["outcome"] == "timed-out" and record["timedOut"] is True, record
    assert record["failureClass"] == "timeout", record
    assert elapsed < 8 + STOP_GRACE + 45, elapsed
    assert "git" in seen and "share" in seen, f"the agent container was never measured: {seen}"
    assert seen["git"] is not None and seen["git"] < 2.0, seen  # the host answers at once
    # The spin really ran (positive control) and got about half a CPU, not the whole machine.
    assert seen["share"] is not None and 0.2 < seen["share"] < 0.7, seen
    _assert_nothing_outlives(session, record["containerId"])


# --- output and disk ----------------------------------------------------------------------------------------

FLOOD_BYTES = 500 * MiB
_MARKER_RE = re.compile(rb"\n\[harness: output truncated at (\d+) bytes; (\d+) more bytes dropped\]\n\Z")


@pytest.mark.attack(row=4, name="500 MB stdout flood")
def test_stdout_flood_is_capped_with_a_marker(repo: GitRepo, runtime: str) -> None:
    session = _session("flood", runtime)
    script = f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x; {_report('done', 'flooded')}"
    started = time.monotonic()
    r = run_agent(repo, session, script, runtime, "--iteration-timeout", "150s", timeout=240)
    elapsed = time.monotonic() - started

    assert r.code == 0, r.stderr  # the run completes: the flood neither stalls nor crashes the host side
    assert elapsed < 200, elapsed
    record = _iteration(repo, session)
    assert record["outcome"] == "done", record
    assert record["logTruncated"] is True and record["logBytes"] == OUTPUT_CAP, record
    log = (repo.journal(session) / "iteration-0001.log").read_bytes()
    found = _MARKER_RE.search(log)
    assert found is not None, log[-300:]
    # The marker accounts for every byte: what was kept plus what it says was dropped is the whole flood.
    assert int(found.group(1)) == OUTPUT_CAP and OUTPUT_CAP + int(found.group(2)) == FLOOD_BYTES, found.group(0)
    assert len(log) == OUTPUT_CAP + len(found.group(0))
    assert log[:OUTPUT_CAP] == b"x" * OUTPUT_CAP
    _assert_nothing_outlives(session, record["containerId"])


FILL_SCRATCH = r"""
for dir in /tmp "$HOME"; do
  echo "fs $dir $(stat -f -c %T "$dir")"
  dd if=/dev/zero of="$dir/fill" bs=1M count=2000 2>&1
  echo "dd $dir exit=$?"
  python3 -c 'import os, sys; print("size", sys.argv[1], os.path.getsize(sys.argv[1] + "/fill"))' "$dir"
  rm -f "$dir/fill"
done
"""


@pytest.mark.attack(row=4, name="fill /tmp (and $HOME) past the 512m tmpfs")
def test_filling_tmp_hits_enospc(repo: GitRepo, runtime: str) -> None:
    session = _session("tmpfs", runtime)
    r = run_agent(repo, session, FILL_SCRATCH + _report("done", "filled"), runtime, "--iteration-timeout", "90s",
                  timeout=150)  # fmt: skip

    assert r.code == 0, r.stderr
    record = _iteration(repo, session)
    assert record["outcome"] == "done", record
    log = (repo.journal(session) / "iteration-0001.log").read_text()
    for where in ("/tmp", "/home/agent"):
        # In memory (a tmpfs, not the host's disk), and cut at its 512 MiB cap with ENOSPC.
        assert f"fs {where} tmpfs" in log, log
        assert f"dd {where} exit=1" in log, log
        assert f"size {where} {512 * MiB}" in log, log
    assert log.count("No space left on device") == 2, log
    # Nothing of it reached the copy on the host disk.
    assert record["diskBytes"] is not None and int(record["diskBytes"]) < 10 * MiB, record
    _assert_nothing_outlives(session, record["containerId"])


@pytest.mark.attack(row=4, name="fill the copy past --max-disk (watched while running)")
def test_copy_growing_past_max_disk_is_stopped_while_running(repo: GitRepo, runtime: str) -> None:
    session = _session("disk", runtime)
    # 200 MB in 10 MB steps, a second apart: the watch (every 5 s) must stop it long before the end.
    script = (
        "for i in $(seq 20); do dd if=/dev/zero of=/workspace/blob$i bs=1M count=10 status=none; "
        f"echo wrote $i; sleep 1; done; {_report('done', 'wrote 200 MB')}"
    )
    r = run_agent(repo, session, script, runtime, "--max-disk", "50m", "--max-iterations", "3",
                  "--iteration-timeout", "120s", timeout=180)  # fmt: skip

    assert r.code == 21, r.stderr
    status = r.json()
    assert status["status"] == "stopped" and status["stopReason"] == "max-disk", status
    assert status["iterationCount"] == 1, status
    record = _iteration(repo, session)
    assert record["outcome"] == "disk-exceeded" and record["diskExceeded"] is True, record
    assert record["failureClass"] == "disk" and record["timedOut"] is False, record
    assert int(record["diskBytes"]) > 50 * MiB, record
    assert "wrote 20" not in (repo.journal(session) / "iteration-0001.log").read_text()
    _assert_nothing_outlives(session, record["containerId"])


@pytest.mark.attack(row=4, name="fill the copy past --max-disk between two looks, then exit")
def test_copy_past_max_disk_at_exit_stops_the_run(repo: GitRepo, runtime: str) -> None:
    session = _session("diskfast", runtime)
    # Faster than the first look of the watch: only the post-iteration measurement can see it.
    script = f"dd if=/dev/zero of=/workspace/blob bs=1M count=80 status=none; {_report('working', 'more to do')}"
    r = run_agent(repo, session, script, runtime, "--max-disk", "50m", "--max-iterations", "3",
                  "--iteration-timeout", "120s", timeout=180)  # fmt: skip

    assert r.code == 21, r.stderr
    status = r.json()
    assert status["status"] == "stopped" and status["stopReason"] == "max-disk", status
    assert status["iterationCount"] == 1, status  # no second iteration was started
    record = _iteration(repo, session)
    assert record["diskExceeded"] is True and int(record["diskBytes"]) > 80 * MiB, record
    assert record["exitCode"] == 0 and record["timedOut"] is False, record
    # The container ended by itself with a report: the outcome is the agent's, the flag records the breach.
    assert record["outcome"] == "working", record
    # The oversized copy was not harvested: nothing of it reached the user's repository.
    assert "over --max-disk: not harvested" in record["harvestError"], record
    assert record["commits"] == [] and repo.git("rev-parse", f"harness/{session}") == repo.git("rev-parse", "main")
    _assert_nothing_outlives(session, record["containerId"])
