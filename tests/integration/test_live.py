"""Watching a run live on the real engine: the log while the agent prints, the hud in a real terminal
(tmux), container stats, readers hammering `status` while sessions start, and the seed's journal."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.backends.base import LABEL_ROLE, LABEL_SESSION
from runner.backends.docker.engine import DockerBackend
from runner.record.journal import Journal, load_model
from runner.record.models import ControlFile, RunSummary
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HOLD, GitRepo, harness, make_repo, release, run_args, wait_for

pytestmark = pytest.mark.docker

REPORT = 'printf \'{"state": "%s", "summary": "iteration %s"}\' "$1" "$HARNESS_ITERATION" > "$HARNESS_STATUS_FILE"'
COMMIT = 'echo "$HARNESS_ITERATION" >> progress.txt; git add -A; git commit -qm "step $HARNESS_ITERATION"'


def running_agents(session: str) -> list[str]:
    labels = [f"io.solo-harness.test={TEST_RUN_LABEL}", f"{LABEL_SESSION}={session}", f"{LABEL_ROLE}=agent"]
    args = [a for label in labels for a in ("--filter", f"label={label}")]
    ps = subprocess.run(
        ["docker", "ps", "-q", "--filter", "status=running", *args], capture_output=True, text=True, check=True
    )
    return ps.stdout.split()


def summary_of(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def test_the_agents_lines_are_in_the_log_while_its_container_runs(repo: GitRepo) -> None:
    """Three lines, then the agent holds until the test lets it print the other five: `harness logs` shows them
    while its container runs, with a secret in the environment (so the redactor is in the path) still redacted."""
    secret = "live-canary-" + uuid.uuid4().hex
    agent = (
        'for i in 1 2 3; do echo "line $i"; [ $i = 2 ] && echo "key $LIVE_SECRET"; done; '
        f'{HOLD}; for i in 4 5 6 7 8; do echo "line $i"; done; ' + REPORT.replace('"$1"', "done")
    )
    r = harness(*run_args("slow", "--env", "LIVE_SECRET", "--detach", cmd=agent, objective="print slowly",
                          iterations=1), cwd=repo.path, env={"LIVE_SECRET": secret})  # fmt: skip
    assert r.code == 0, r.stderr
    seen: list[str] = []

    def first_line_shown() -> bool:
        out = harness("logs", "--session", "slow", cwd=repo.path, timeout=60)
        assert out.code == 0, out.stderr
        seen[:] = [out.stdout]
        return "line 1\n" in out.stdout

    wait_for(first_line_shown, 120, "'line 1' in harness logs")
    assert running_agents("slow"), "the agent's container ended before its first line reached the log"
    assert "line 4" not in seen[0]  # it was read live, not after the end
    wait_for(lambda: "line 3\n" in harness("logs", "--session", "slow", cwd=repo.path).stdout, 60, "line 3")
    assert running_agents("slow")  # held: still running
    release(repo, "slow")
    wait_for(lambda: summary_of(repo, "slow").status.value != "running", 120, "the run to end")
    log = (repo.journal("slow") / "iteration-0001.log").read_text()
    assert [f"line {i}" for i in range(1, 9)] == [line for line in log.splitlines() if line.startswith("line")]
    assert secret not in log and "key [REDACTED:LIVE_SECRET]" in log


def test_docker_stats_report_use_against_the_limits(repo: GitRepo) -> None:
    name = f"harness-test-stats-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--label", f"io.solo-harness.test={TEST_RUN_LABEL}",
         "--network", "none", "--cpus", "0.5", "--memory", "128m", "--pids-limit", "32",
         "harness-base:latest", "sh", "-c", "while :; do :; done"],
        capture_output=True, check=True,
    )  # fmt: skip
    try:
        backend = DockerBackend()
        found = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True, check=True)
        cid = found.stdout.strip()
        first = backend.stats(cid)
        assert first is not None and first.container_id == cid
        assert (first.cpus_limit, first.memory_limit_bytes, first.pids_limit) == (0.5, 128 * 1024**2, 32)
        assert first.pids is not None and first.pids >= 1 and 0 < first.memory_bytes < 128 * 1024**2
        assert first.started_at is not None and first.read_at >= first.started_at

        def busy() -> bool:
            later = backend.stats(cid)
            return later is not None and later.cpu_seconds > first.cpu_seconds + 0.2

        wait_for(busy, 30, "CPU time to accumulate")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    assert backend.stats(cid) is None  # gone: no sample, no error
    assert backend.stats("0" * 64) is None


BUSY = "already driven by another harness process"  # SessionBusyError's message
# A reader asking as fast as it can whether the supervisor of one session lives (what status, hud,
# logs --follow and detach's wait ask), until the test says stop (bounded by a deadline).
PROBE = """
import sys, time
from pathlib import Path
from runner.record.journal import Journal
journal, stop = Journal(Path(sys.argv[1]), "probe"), Path(sys.argv[2])
deadline = time.monotonic() + 300
while not stop.exists() and time.monotonic() < deadline:
    for _ in range(200):
        journal.supervisor_alive()
"""


def test_status_hammered_while_sessions_start_disturbs_none(tmp_path: Path) -> None:
    """Readers polling `status` (the real CLI, in threads) and its liveness question (in processes, as
    fast as they can) while several detached runs start: every run starts and completes, and nobody is
    told 'busy'."""
    sessions = [f"h{i}" for i in range(4)]
    repos = {s: make_repo(tmp_path / s) for s in sessions}
    stop = threading.Event()
    errors: list[str] = []
    calls = [0]

    def hammer_cli(session: str) -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline and calls[0] < 5000:
            calls[0] += 1
            st = harness("status", "--session", session, "--json", cwd=repos[session].path, timeout=60)
            if BUSY in st.stderr or st.code not in {0, 7, 20, 21}:  # 7: not created yet
                errors.append(f"status {session}: {st.code} {st.stderr.strip()}")

    threads = [threading.Thread(target=hammer_cli, args=(s,), daemon=True) for s in sessions]
    for t in threads:
        t.start()
    stop_file = tmp_path / "stop"
    probes = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, str(Journal.for_repo(repos[s].path.resolve(), s).dir), str(stop_file)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in sessions
    ]
    try:
        starts = {}
        agent = f"{COMMIT}; " + REPORT.replace('"$1"', "done")

        def start(session: str) -> None:
            starts[session] = harness(*run_args(session, "--detach", cmd=agent, iterations=2), cwd=repos[session].path)

        starters = [threading.Thread(target=start, args=(s,)) for s in sessions]
        for t in starters:
            t.start()
        for t in starters:
            t.join(timeout=180)
        for s in sessions:
            assert starts[s].code == 0, f"{s}: {starts[s].stderr}"
        for s in sessions:
            log = repos[s].journal(s) / "supervisor.log"
            # Ended, or its supervisor gave up at once (a run left 'running' with no supervisor). Beyond this
            # machine's default cap of sessions at once, some wait in the queue first.
            wait_for(
                lambda s=s, log=log: summary_of(repos[s], s).status.value not in {"running", "queued"}
                or BUSY in log.read_text(),
                180, f"{s} to end",
            )  # fmt: skip
    finally:
        stop.set()
        stop_file.touch()
        for t in threads:
            t.join(timeout=120)
        for probe in probes:
            _, err = probe.communicate(timeout=120)
            if probe.returncode != 0:
                errors.append(f"liveness probe: {err.strip()[-500:]}")
    for s in sessions:
        final = harness("status", "--session", s, "--json", cwd=repos[s].path)
        assert final.code == 0 and final.json()["status"] == "completed", (s, final.stdout, final.stderr)
        supervisor_log = (repos[s].journal(s) / "supervisor.log").read_text()
        assert BUSY not in supervisor_log and BUSY not in starts[s].stderr
    assert calls[0] >= len(sessions) and not errors, errors[:5]


def test_every_file_the_seed_lists_exists_after_a_plain_run(repo: GitRepo) -> None:
    r = harness(*run_args("seed", agent="demo", objective="one step", iterations=1), cwd=repo.path)
    assert r.code in {0, 21}, r.stderr
    journal = repo.journal("seed")
    for name in ("objective.md", "run-summary.json", "control.json", "iteration-0001.json", "iteration-0001.log"):
        assert (journal / name).is_file(), f"{name} is missing from {sorted(p.name for p in journal.iterdir())}"
    control = load_model(journal / "control.json", ControlFile)
    assert (control.kind, control.session_id, control.stop_requested) == ("solo-harness.control", "seed", False)
    raw = (journal / "control.json").read_text()
    assert '"schemaVersion": 1' in raw and '"updatedAt": ' in raw


# --- the hud in a real terminal ------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and os.environ.get("CI", "").lower() not in {"1", "true", "yes"},
    reason="tmux is not installed ('make test-tools' installs it as root; CI=true turns this into a failure)",
)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A private tmux server (its own socket) that the test kills at the end."""
    socket = tmp_path / "tmux.sock"

    def run(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(socket), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    yield run
    subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, check=False, timeout=30)


def header(screen: str) -> dict[str, str]:
    rows = {}
    for line in screen.splitlines():
        cells = line.strip("│ ").split(None, 1)
        if len(cells) == 2 and cells[0] in {"state", "iterations", "time", "iteration", "container", "notes"}:
            rows[cells[0]] = cells[1].rstrip("│ ").strip()
    return rows


@needs_tmux
def test_the_hud_in_a_real_terminal_follows_the_run_and_leaves_at_its_end(
    repo: GitRepo, tmux: Callable[..., str]
) -> None:
    agent = f'for i in 1 2 3 4; do echo "it $HARNESS_ITERATION line $i"; sleep 1; done; {COMMIT}; ' + REPORT.replace(
        '"$1"', "working"
    )
    r = harness(*run_args("tv", "--max-time", "10m", "--detach", cmd=agent, iterations=3), cwd=repo.path)
    assert r.code == 0, r.stderr
    env = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in os.environ.items() if k.startswith("HARNESS_") or k in {"PATH", "HOME"}
    )
    command = (
        f"cd {shlex.quote(str(repo.path))} && env {env} {shlex.quote(sys.executable)} -m runner hud --session tv"
        " --interval 0.3; echo HUD-EXITED-$?; exec cat"
    )
    tmux("new-session", "-d", "-s", "hud", "-x", "150", "-y", "60", command)
    screens: list[str] = []

    def screen_shows(check: Callable[[dict[str, str], str], bool]) -> Callable[[], bool]:
        def look() -> bool:
            screen = tmux("capture-pane", "-p", "-t", "hud")
            screens.append(screen)
            return check(header(screen), screen)

        return look

    # While iteration 1 or 2 runs: state, time against --max-time, the container's use, the waiting note.
    wait_for(
        screen_shows(lambda h, s: h.get("state") == "running" and "running for" in h.get("iteration", "")
                     and "CPU of 1" in h.get("container", "")),
        120, "the hud to show a running iteration with its container",
    )  # fmt: skip
    live = header(screens[-1])
    assert live["time"].endswith("left of 10m00s") and "elapsed" in live["time"]
    assert "memory" in live["container"] and "processes" in live["container"]
    assert "notes" not in live
    # A note given now waits for the next iteration's prompt (it is marked taken when that one ends).
    assert harness("note", "--session", "tv", "mind the tests", cwd=repo.path).code == 0
    wait_for(
        screen_shows(lambda h, s: h.get("notes") == "1 note for the next iteration: mind the tests"),
        60, "the waiting note in the hud",
    )  # fmt: skip
    wait_for(screen_shows(lambda h, s: h.get("iterations") == "1 of 3"), 120, "iteration 1 in the header")
    assert "HUD-EXITED" not in screens[-1]
    # The run ends: the hud draws the final state and leaves by itself.
    wait_for(screen_shows(lambda h, s: "HUD-EXITED-0" in s), 180, "the hud to leave at the run's end")
    final = screens[-1]
    rows = header(final)
    assert rows["state"].startswith("stopped") and rows["iterations"] == "3 of 3"
    table = [line.split() for line in final.splitlines() if line.split()[:2] in (["1", "working"], ["2", "working"],
                                                                                   ["3", "working"])]  # fmt: skip
    assert len(table) == 3  # the header's count is the table's
