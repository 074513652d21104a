"""`harness race` end to end on the real Docker engine and real git: racers are scripted agents that behave
differently by their session's id ($HARNESS_SESSION is S-1, S-2, ...)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.record.journal import load_model
from runner.record.models import RaceRecord, RunSummary
from tests.helpers import HARNESS, HOLD, GitRepo, containers, exited, harness, release, wait_for

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _end_what_the_race_left(repo: GitRepo) -> Iterator[None]:
    """A test that fails mid-race leaves detached supervisors: end them (by the pids their journals name, only
    while their command line names this test's repository), so that none writes into a later test's files."""
    yield
    for path in repo.path.glob("memory/context-db/sessions/*/artifacts/solo-harness/*.json"):
        if path.name not in ("race.json", "run-summary.json"):
            continue
        pid = (json.loads(path.read_text()).get("supervisor") or {}).get("pid")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            continue
        if str(repo.path).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


DONE = """printf '{"state": "done", "summary": "%s"}' "$HARNESS_SESSION" > "$HARNESS_STATUS_FILE" """


def racers(winner: str, *, winner_body: str = "", others: str = "") -> str:
    """An agent command: the racer whose id ends in `winner` writes ok.txt (what the check wants); the others
    run `others` and claim to be done without it."""
    return (
        f'case "$HARNESS_SESSION" in\n*-{winner}) {winner_body} echo ok > ok.txt;;\n*) {others} echo nope > no.txt;;\n'
        f"esac\n{DONE}"
    )


def race_args(session: str, cmd: str, *extra: str, n: int = 3, iterations: int = 1) -> list[str]:
    return ["race", "--session", session, "--objective", "write ok.txt", "--n", str(n), "--agent-cmd", cmd,
            "--check", "test -f ok.txt", "--max-iterations", str(iterations), *extra]  # fmt: skip


def record(repo: GitRepo, race: str) -> RaceRecord:
    return load_model(repo.journal(race) / "race.json", RaceRecord)


def summary(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def test_exactly_one_racer_passes_the_check_and_wins_then_merge_and_discard(repo: GitRepo) -> None:
    r = harness(*race_args("rc", racers("2")), "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    st = r.json()
    assert st["state"] == "finished" and st["winners"] == ["rc-2"] and st["endReason"] == "all-ended"
    rows = {row["sessionId"]: row for row in st["racers"]}
    assert list(rows) == ["rc-1", "rc-2", "rc-3"]
    assert rows["rc-2"]["winner"] and rows["rc-2"]["checkPassed"] is True and rows["rc-2"]["status"] == "completed"
    for loser in ("rc-1", "rc-3"):  # each ran its own session: its own branch, its failed check
        assert not rows[loser]["winner"] and rows[loser]["checkPassed"] is False
        assert rows[loser]["status"] == "stopped" and rows[loser]["stopReason"] == "max-iterations"
        assert repo.git("show", f"harness/{loser}:no.txt") == "nope"
    assert rows["rc-2"]["filesChanged"] == 1 and rows["rc-2"]["insertions"] == 1
    # Each racer has its own copy, made from the repository's one shared seed.
    assert len({summary(repo, f"rc-{k}").run_dir for k in (1, 2, 3)}) == 3
    seeds = {summary(repo, f"rc-{k}").worktree.seed for k in (1, 2, 3)}
    assert len(seeds) == 1 and None not in seeds

    note = harness("note", "--session", "rc", "hi", cwd=repo.path)  # a command of one session, given the race
    assert note.code == 7 and "'rc' is a race, not a session" in note.stderr and "rc-1" in note.stderr
    status = harness("status", "--session", "rc", cwd=repo.path)
    assert status.code == 0, status.stderr
    assert "rc-2 won" in status.stdout and "rc-3" in status.stdout
    md = harness("report", "--session", "rc", cwd=repo.path)
    assert md.code == 0, md.stderr
    table = [line for line in md.stdout.splitlines() if line.startswith("| rc-")]
    assert len(table) == 3 and "rc-2 (winner)" in table[1] and "passed" in table[1] and "failed" in table[0]
    assert "harness merge --session rc" in md.stdout

    merged = harness("merge", "--session", "rc", "--json", cwd=repo.path)
    assert merged.code == 0, merged.stderr
    assert merged.json()["sessionId"] == "rc-2" and (repo.path / "ok.txt").read_text() == "ok\n"
    gone = harness("discard", "--session", "rc", "--json", cwd=repo.path)
    assert gone.code == 0, gone.stderr
    assert gone.json()["kept"] == ["rc-2"] and [d["sessionId"] for d in gone.json()["discarded"]] == ["rc-1", "rc-3"]
    refs = repo.git("for-each-ref", "--format=%(refname)", "refs/harness-discarded/", "refs/heads/harness/")
    assert refs.count("refs/harness-discarded/rc-1/") == 1 and refs.count("refs/harness-discarded/rc-3/") == 1
    assert "refs/heads/harness/rc-2" in refs and "refs/heads/harness/rc-1" not in refs
    back = harness("restore", "--session", "rc-1", cwd=repo.path)  # each discard is undone like any other
    assert back.code == 0, back.stderr
    assert repo.git("show", "harness/rc-1:no.txt") == "nope"


def test_first_stops_the_others_at_once(repo: GitRepo) -> None:
    # The losers hold their iteration (two minutes at most): only --first can end them this soon.
    r = harness(*race_args("rf", racers("1", others=f"{HOLD};")), "--first", "--json", cwd=repo.path, timeout=100)
    assert r.code == 0, r.stderr
    st = r.json()
    assert st["winners"] == ["rf-1"] and st["endReason"] == "won-first"
    for loser in ("rf-2", "rf-3"):
        s = summary(repo, loser)
        assert s.status.value == "stopped" and s.stop_reason is not None and s.stop_reason.value == "stop-requested"
        control = json.loads((repo.journal(loser) / "control.json").read_text())
        assert control["stopMode"] == "now" and "rf-1 won" in control["stopNote"]
    assert [r.stopped_by_race for r in record(repo, "rf").racers] == [False, True, True]
    assert not (repo.journal("rf-2") / "iteration-0001.json").read_text().count('"outcome": "done"')


def test_merge_refuses_without_one_winner_and_names_the_racers(repo: GitRepo) -> None:
    r = harness(*race_args("rn", racers("9"), n=2), "--json", cwd=repo.path)  # nobody writes ok.txt
    assert r.code == 21, r.stderr
    assert r.json()["winners"] == []
    m = harness("merge", "--session", "rn", cwd=repo.path)
    assert m.code == 11 and len(m.stderr.strip().splitlines()) == 1
    assert "no winner" in m.stderr and "harness merge --session rn-1" in m.stderr


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--n", "2", "--agents", "demo,demo"], "exactly one of --agents"),
        (["--agents", "demo,demo", "--agent", "demo"], "cannot go with --agent"),
        (["--n", "3", "--models", "a,b"], "one model per racer"),
        (["--n", "1"], "2 to 16 racers"),
        (["--n", "2", "--judge", "all", "--first"], "cannot go with --judge all"),
        (["--n", "2", "--budget", "pooled"], "needs --max-cost"),
    ],
)
def test_bad_combinations_are_one_line_and_exit_2(repo: GitRepo, extra: list[str], says: str) -> None:
    r = harness("race", "--session", "bad", "--objective", "x", "--check", "true", *extra, cwd=repo.path)
    assert r.code == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not repo.journal("bad").exists() and not repo.journal("bad-1").exists()


def test_a_killed_race_supervisor_then_resume_goes_on_with_every_unfinished_racer(repo: GitRepo) -> None:
    # Both racers hold their first iteration; racer 2 then passes the check.
    cmd = racers("2", winner_body=f"{HOLD};", others=f"{HOLD};")
    r = harness(*race_args("rk", cmd, n=2, iterations=2), "--detach", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    for k in (1, 2):
        wait_for((repo.journal(f"rk-{k}") / "iteration-0001.log").exists, 90, f"rk-{k}'s first iteration")
    busy = harness("resume", "--session", "rk", cwd=repo.path)  # one supervisor per race
    assert busy.code == 10 and "already driven" in busy.stderr
    race_pid = record(repo, "rk").supervisor.pid  # type: ignore[union-attr]
    racer_pid = summary(repo, "rk-1").supervisor.pid  # type: ignore[union-attr]
    os.kill(race_pid, signal.SIGKILL)  # the race's supervisor, and racer 1's with it (racer 2's lives on)
    os.kill(racer_pid, signal.SIGKILL)
    wait_for(lambda: harness("status", "--session", "rk", "--json", cwd=repo.path).json()["state"] == "interrupted",
             30, "the race to show interrupted")  # fmt: skip
    wait_for(lambda: exited(racer_pid), 30, "racer 1's supervisor to die")  # killed with the race's, not before it
    st = harness("status", "--session", "rk", "--json", cwd=repo.path).json()
    assert [row["status"] for row in st["racers"]] == ["interrupted", "running"]

    resume = subprocess.Popen([*HARNESS, "resume", "--session", "rk", "--json"], cwd=repo.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: summary(repo, "rk-1").supervisor is not None and summary(repo, "rk-1").supervisor.pid
                 != racer_pid, 60, "racer 1's new supervisor")  # type: ignore[union-attr]  # fmt: skip
        release(repo, "rk-1")
        release(repo, "rk-2")
        out, err = resume.communicate(timeout=120)
    finally:
        if resume.poll() is None:
            resume.kill()
    assert resume.returncode == 0, err
    st = json.loads(out)
    assert st["state"] == "finished" and st["winners"] == ["rk-2"]
    rows = {row["sessionId"]: row for row in st["racers"]}
    assert rows["rk-1"]["status"] == "stopped" and rows["rk-1"]["stopReason"] == "max-iterations"
    assert rows["rk-2"]["status"] == "completed" and rows["rk-2"]["iterations"] == 1  # never restarted
    assert not record(repo, "rk").supervisor


@pytest.mark.parametrize(
    ("race", "seen", "loser_dies"),
    [("ka", True, False), ("kb", False, False), ("kc", False, True)],  # a name each: their containers apart
    ids=["after-the-race-recorded-the-win", "before-it-saw-the-win", "before-it-saw-the-win-with-the-loser's"],
)
def test_a_race_supervisor_killed_after_a_first_win_resumes_to_that_winner(
    repo: GitRepo, race: str, seen: bool, loser_dies: bool
) -> None:
    first, second = f"{race}-1", f"{race}-2"
    # Both racers hold their first iteration; racer 2 is let go and passes the check while racer 1 still runs.
    cmd = racers("2", winner_body=f"{HOLD};", others=f"{HOLD};")
    r = harness(*race_args(race, cmd, "--first", n=2, iterations=2), "--detach", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    for k in (1, 2):
        wait_for((repo.journal(f"{race}-{k}") / "iteration-0001.log").exists, 90, f"{race}-{k}'s first iteration")
    race_pid = record(repo, race).supervisor.pid  # type: ignore[union-attr]
    racer_pid = summary(repo, first).supervisor.pid  # type: ignore[union-attr]
    if seen:  # killed right after race.json records the winner (and the stop of racer 1 it asked for)
        release(repo, second)
        wait_for(lambda: record(repo, race).winners == [second], 90, "the race to record its winner")
    else:  # frozen first, so that it is killed with the win in racer 2's journal only, never seen by the race
        os.kill(race_pid, signal.SIGSTOP)
        release(repo, second)
        wait_for(lambda: summary(repo, second).status.value == "completed" and summary(repo, second).supervisor
                 is None, 90, "racer 2 to end completed")  # fmt: skip
        assert record(repo, race).winners == []
    os.kill(race_pid, signal.SIGKILL)
    wait_for(lambda: exited(race_pid), 30, "the race's supervisor to die")
    assert summary(repo, first).supervisor is not None  # racer 1 still runs (or is being stopped)
    if loser_dies:  # racer 1's supervisor dies too (its container, held, lives on): resumable, were it not lost
        os.kill(racer_pid, signal.SIGKILL)
        wait_for(lambda: exited(racer_pid), 30, "racer 1's supervisor to die")
        assert containers(f"io.solo-harness.session={first}")

    resume = subprocess.Popen([*HARNESS, "resume", "--session", race, "--json"], cwd=repo.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    drivers = set()  # every supervisor racer 1's journal names while the race is resumed
    deadline = time.monotonic() + 180
    try:
        while True:
            held = summary(repo, first).supervisor
            drivers.add(held.pid if held else None)
            try:
                out, err = resume.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                assert time.monotonic() < deadline, "timed out waiting for the resumed race to end"
    finally:
        if resume.poll() is None:
            resume.kill()
    assert resume.returncode == 0, err  # as for a won race
    assert drivers <= {racer_pid, None}, drivers  # racer 1 was never given a new supervisor
    st = json.loads(out)
    assert (st["state"], st["winners"], st["endReason"]) == ("finished", [second], "won-first")
    rows = {row["sessionId"]: row for row in st["racers"]}
    assert (rows[second]["status"], rows[second]["iterations"]) == ("completed", 1)
    # Racer 1 is stopped by the race, in the iteration it was in: never restarted to compete again.
    assert (rows[first]["status"], rows[first]["stopReason"], rows[first]["stoppedByRace"]) == (
        "stopped", "stop-requested", True)  # fmt: skip
    assert not (repo.journal(first) / "iteration-0002.json").exists()
    assert rows[first]["iterations"] == (0 if loser_dies else 1)  # a killed supervisor records no iteration
    # Racer 1's supervisor writes its end, then releases what it holds and exits: a moment after, under load.
    wait_for(lambda: exited(racer_pid), 30, "racer 1's supervisor to exit")
    assert summary(repo, first).supervisor is None
    left = containers(f"io.solo-harness.session={first}")
    shown = subprocess.run(["docker", "inspect", "--format", '{{index .Config.Labels "io.solo-harness.role"}} '
                            "{{.State.Status}} {{.State.Pid}} {{.Created}} {{.State.FinishedAt}}", *left],
                           capture_output=True, text=True, check=False).stdout if left else ""  # fmt: skip
    assert not left, shown  # its held container is gone too
    assert (
        json.loads((repo.journal(first) / "control.json").read_text())["stopNote"]
        == f"race {race}: {second} won (--first)"
    )
    assert [r.stopped_by_race for r in record(repo, race).racers] == [True, False] and not record(repo, race).supervisor


def test_a_race_is_refused_over_an_existing_name(repo: GitRepo, tmp_path: Path) -> None:
    r = harness(*race_args("dup", racers("1"), n=2), "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    again = harness(*race_args("dup", racers("1"), n=2), cwd=repo.path)
    assert again.code == 6 and "race 'dup' already exists" in again.stderr


def test_the_racers_go_through_the_queue_in_order(repo: GitRepo) -> None:
    # One slot: racer 2 waits, queued and without a container, while racer 1 holds its iteration.
    cmd = racers("2", others=f"{HOLD};")
    race = subprocess.Popen([*HARNESS, *race_args("rq", cmd, "--slots", "1", "--json", n=2)], cwd=repo.path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for((repo.journal("rq-1") / "iteration-0001.log").exists, 90, "racer 1's iteration")

        def queued() -> bool:
            st = harness("status", "--session", "rq", "--json", cwd=repo.path).json()
            return [row["status"] for row in st["racers"]] == ["running", "queued"]

        wait_for(queued, 60, "racer 2 to wait in the queue")
        assert not (Path(summary(repo, "rq-2").run_dir) / "workspace").exists()  # it costs nothing yet
        release(repo, "rq-1")
        out, err = race.communicate(timeout=180)
    finally:
        if race.poll() is None:
            race.kill()
    assert race.returncode == 0, err
    assert json.loads(out)["winners"] == ["rq-2"]
    assert summary(repo, "rq-1").finished_at <= summary(repo, "rq-2").queue.started_at  # type: ignore[operator]


def test_a_pooled_budget_stops_every_racer_once_their_spends_add_up_to_it(repo: GitRepo) -> None:
    from tests.integration.test_gateway_run import AGENT, REAL_KEY
    from tests.upstreams import Reply, ScriptedUpstream, Usage

    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    dear = Usage(input_tokens=10_000, output_tokens=10_000)  # $0.18 a call on sonnet: one call an iteration
    with ScriptedUpstream(anthropic=[Reply(text="hi", usage=dear)] * 40) as up:
        # Nobody passes the check: without the pool each racer would spend $0.54 (three failed checks), $1.62 in all.
        r = harness("race", "--session", "rp", "--objective", "talk to the model", "--n", "3",
                    "--agent-cmd", "LINGER=1 python3 agent.py", "--check", "false", "--max-iterations", "5",
                    "--budget", "pooled", "--max-cost", "0.50", "--json", cwd=repo.path,
                    env={"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": REAL_KEY})  # fmt: skip
    assert r.code == 21, r.stderr
    st = r.json()
    assert st["endReason"] == "max-cost" and st["winners"] == [] and st["maxCostUsd"] == 0.5
    # Past the pool only by what the racers spent between two looks of the race (docs/race.md: the bound), and
    # less than they spend without it (the third racer, started last, is stopped before it spends anything).
    assert 0.50 <= st["costUsd"] < 3 * 0.54
    # A racer's failed checks end it `failed` after three iterations ($0.54): what the race had not stopped first.
    assert {row["status"] for row in st["racers"]} <= {"stopped", "failed"}
    assert any(row["stoppedByRace"] and row["stopReason"] == "stop-requested" for row in st["racers"])


def test_the_race_report_in_html_is_one_inert_page_a_browser_shows(repo: GitRepo, tmp_path: Path) -> None:
    from tests.integration.test_report import browse

    # Racer 1 leaves a flagged path whose name is markup: the page must show it as text.
    cmd = racers("2", others="mkdir -p .vscode; echo {} > '.vscode/<img src=x>.json';")
    r = harness(*race_args("rh", cmd, n=2), "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    page = tmp_path / "race.html"
    r = harness("report", "--session", "rh", "--format", "html", "--output", str(page), cwd=repo.path)
    assert r.code == 0 and r.stdout == "", r.stderr
    html = page.read_text()
    assert "default-src 'none'" in html and "<script" not in html.lower() and "http://" not in html
    dom = browse(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<tr class="racer" id="racer-rh-1">' in dom.stdout and '<tr class="racer" id="racer-rh-2">' in dom.stdout
    assert "rh-2 (winner)" in dom.stdout and ".vscode/&lt;img src=x&gt;.json" in dom.stdout
    assert "<img" not in dom.stdout.lower()


def test_a_racer_that_games_the_tests_loses_because_of_protect(repo: GitRepo) -> None:
    (repo.path / "tests").mkdir()
    (repo.path / "tests/check.sh").write_text("grep -q fixed app.py\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a test")
    # Racer 1 games the test (it now passes whatever app.py says); racer 2 does the work.
    cmd = racers("2", winner_body="echo fixed >> app.py;", others="echo 'exit 0' > tests/check.sh;")
    args = ["--objective", "fix app.py", "--n", "2", "--agent-cmd", cmd, "--check", "sh tests/check.sh",
            "--max-iterations", "1", "--judge", "all", "--json"]  # fmt: skip
    # The control: with the check run on the copy as the agent left it, the gaming racer passes too.
    r = harness("race", "--session", "open", *args, "--no-protect", cwd=repo.path)
    assert r.code == 0, r.stderr
    assert sorted(r.json()["winners"]) == ["open-1", "open-2"]
    r = harness("race", "--session", "guarded", *args, "--protect", "tests", cwd=repo.path)
    assert r.code == 0, r.stderr
    st = r.json()
    assert st["winners"] == ["guarded-2"]
    rows = {row["sessionId"]: row for row in st["racers"]}
    assert rows["guarded-1"]["checkPassed"] is False and rows["guarded-1"]["status"] == "stopped"
    assert rows["guarded-1"]["protected"] == ["tests/check.sh"] and rows["guarded-2"]["protected"] == []
    assert repo.git("show", "harness/guarded-1:tests/check.sh") == "exit 0"  # its change is on its branch


def test_agents_and_models_give_each_racer_its_own(repo: GitRepo) -> None:
    r = harness("race", "--session", "am", "--objective", "Record two steps", "--agents", "demo,demo",
                "--models", "m1,m2", "--check", "true", "--max-iterations", "3", "--json", cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    assert [(row["agent"], row["model"]) for row in r.json()["racers"]] == [("demo", "m1"), ("demo", "m2")]
    for k, model in ((1, "m1"), (2, "m2")):
        agent = summary(repo, f"am-{k}").agent
        assert (agent.name, agent.model) == ("demo", model)


def test_stop_of_a_race_stops_every_racer_and_the_race_ends(repo: GitRepo) -> None:
    r = harness(*race_args("rs", racers("9", others=f"{HOLD};"), n=2), "--detach", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    for k in (1, 2):
        wait_for((repo.journal(f"rs-{k}") / "iteration-0001.log").exists, 90, f"rs-{k}'s first iteration")
    stop = harness("stop", "--session", "rs", "--now", "--json", cwd=repo.path)
    assert stop.code == 0, stop.stderr
    assert [one["sessionId"] for one in stop.json()] == ["rs-1", "rs-2"]
    wait_for(lambda: record(repo, "rs").state.value == "finished", 90, "the race to end")
    st = harness("status", "--session", "rs", "--json", cwd=repo.path)
    assert st.code == 21 and st.json()["winners"] == []
    assert [(row["status"], row["stopReason"]) for row in st.json()["racers"]] == [("stopped", "stop-requested")] * 2


SAY = 'echo "said by $HARNESS_SESSION";'


def test_hud_logs_and_list_of_a_finished_race_show_the_race_and_every_racer(repo: GitRepo) -> None:
    r = harness(*race_args("rv", racers("2", winner_body=SAY, others=SAY), n=2), "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    wide = {"COLUMNS": "200"}  # one line per racer
    hud = harness("hud", "--session", "rv", cwd=repo.path, env=wide)  # the race has ended: one frame
    assert hud.code == 0, hud.stderr
    rows = {line.split()[0]: line for line in hud.stdout.splitlines() if line.startswith("rv-")}
    assert list(rows) == ["rv-1", "rv-2"], hud.stdout
    assert "(winner)" in rows["rv-2"] and "passed" in rows["rv-2"] and "completed" in rows["rv-2"]
    assert "(winner)" not in rows["rv-1"] and "failed" in rows["rv-1"] and "stopped" in rows["rv-1"]
    assert "1 of 1" in rows["rv-1"]  # its iterations, of --max-iterations
    assert re.search(r"│ winner +rv-2 ", hud.stdout) and re.search(r"│ state +finished \(all-ended\)", hud.stdout)
    hud_json = harness("hud", "--session", "rv", "--json", cwd=repo.path)
    assert hud_json.code == 0, hud_json.stderr
    st = hud_json.json()
    assert st["sessionId"] == "rv" and st["state"] == "finished" and st["winners"] == ["rv-2"]
    assert [(row["sessionId"], row["checkPassed"], row["maxIterations"]) for row in st["racers"]] == [
        ("rv-1", False, 1), ("rv-2", True, 1)]  # fmt: skip
    one = harness("hud", "--session", "rv-1", "--json", cwd=repo.path).json()  # a racer's own hud names its race
    assert one["status"]["sessionId"] == "rv-1" and one["status"]["race"]["sessionId"] == "rv"
    assert "a racer of rv: finished (all-ended), 2 racers: rv-2 won" in harness(
        "status", "--session", "rv-1", cwd=repo.path, env=wide).stdout  # fmt: skip

    logs = harness("logs", "--session", "rv", cwd=repo.path)
    assert logs.code == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert "rv-1 | said by rv-1" in lines and "rv-2 | said by rv-2" in lines, logs.stdout
    assert lines.index("rv-1 | --- iteration 1 ---") < lines.index("rv-1 | said by rv-1") < lines.index(
        "rv-2 | --- iteration 1 ---")  # fmt: skip
    assert all(line.startswith(("rv-1 | ", "rv-2 | ")) for line in lines), logs.stdout
    again = harness("logs", "--session", "rv", "--iteration", "2", cwd=repo.path)
    assert again.code == 2 and "no racer of race 'rv' has an iteration 2" in again.stderr

    listed = harness("list", cwd=repo.path)
    assert listed.code == 0, listed.stderr
    lines = [line.strip() for line in listed.stdout.splitlines()]
    race = next(i for i, line in enumerate(lines) if line.startswith("rv "))
    assert "race finished (all-ended), 2 racers: rv-2 won" in lines[race], listed.stdout
    assert [line.split()[0] for line in lines[race + 1 : race + 3]] == ["rv-1", "rv-2"], listed.stdout
    indent = {line.split()[0]: len(line) - len(line.lstrip()) for line in listed.stdout.splitlines() if line.strip()}
    assert indent["rv-1"] == indent["rv-2"] == indent["rv"] + 2  # (a session of its own: tests/unit/test_readers.py)
    for argv in (["list", "--json"], ["status", "--json"]):  # a list of sessions as before, each racer naming its race
        rows = {row["sessionId"]: row for row in harness(*argv, cwd=repo.path).json()}
        assert set(rows) == {"rv-1", "rv-2"}
        for k in ("rv-1", "rv-2"):
            tag = rows[k]["race"]
            assert (tag["sessionId"], tag["state"], tag["winners"], tag["racers"]) == (
                "rv", "finished", ["rv-2"], ["rv-1", "rv-2"])  # fmt: skip


def test_logs_follow_of_a_running_race_follows_every_racer_until_the_race_ends(repo: GitRepo) -> None:
    # One slot: racer 1 holds its iteration while racer 2 waits in the queue, with no log yet; once racer 1 is
    # released and ends, racer 2 starts, and the logs that were following before it started show its lines too.
    cmd = racers("2", winner_body=SAY, others=f"echo before-$HARNESS_SESSION; {HOLD}; echo after-$HARNESS_SESSION;")
    r = harness(*race_args("rl", cmd, "--slots", "1", n=2), "--detach", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    follow = subprocess.Popen([*HARNESS, "logs", "--session", "rl", "--follow"], cwd=repo.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen: list[str] = []

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    hud = None
    try:
        wait_for(lambda: "rl-1 | before-rl-1\n" in seen, 90, "racer 1's first line, followed")
        wait_for(lambda: summary(repo, "rl-2").status.value == "queued", 60, "racer 2 to wait for the slot")
        assert not (repo.journal("rl-2") / "iteration-0001.log").exists()  # not started: nothing to follow yet
        live = harness("hud", "--session", "rl", "--json", cwd=repo.path).json()
        assert live["state"] == "running" and [row["status"] for row in live["racers"]] == ["running", "queued"]
        hud = subprocess.Popen([*HARNESS, "hud", "--session", "rl", "--interval", "0.2"], cwd=repo.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        release(repo, "rl-1")
        follow.wait(timeout=120)
        hud_out, hud_err = hud.communicate(timeout=60)  # the live hud leaves by itself once the race has ended
    finally:
        for proc in (follow, hud):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert hud.returncode == 0, hud_err
    assert "finished (all-ended)" in hud_out and re.search(r"^rl-2 \(winner\) .* completed", hud_out, re.M), hud_out
    reader.join(10)
    assert follow.returncode == 0, follow.stderr.read()  # type: ignore[union-attr]
    assert record(repo, "rl").state.value == "finished"  # it ended with the race, not before
    assert record(repo, "rl").winners == ["rl-2"]
    assert seen.index("rl-1 | before-rl-1\n") < seen.index("rl-1 | after-rl-1\n") < seen.index("rl-2 | said by rl-2\n")
    assert seen.count("rl-2 | --- iteration 1 ---\n") == 1 and all(
        line.startswith(("rl-1 | ", "rl-2 | ")) for line in seen
    )
