"""`harness report --all`: real sessions (real engine, real git) in several repositories on one page, as JSON,
markdown and HTML, and the HTML in a real headless browser (screenshot and DOM)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.usecases.known_repos import known_repos, remember_repo
from runner.usecases.morning import MorningReport
from runner.usecases.race_status import RaceStatus, race_status
from runner.usecases.report import ReportRequest, SessionReport, build_report
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, harness, make_repo, run_args
from tests.integration.test_report import browse

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("morning")]  # one worker makes the night once

# Planted where the page shows agent-written text: the diff of a file and the agent's summary.
PLANTED = "<script>document.title='pwned'</script>"

# One agent for every session, its behaviour chosen by the session's name: `good` does its work and the
# check passes, `broke` exits with an error every time (the run fails after three in a row), `flag` adds
# web/.envrc (flagged, and sorted after app.py by git), `old` and `lost` do a plain change.
AGENT = f"""\
import json, os, pathlib, subprocess, sys
session = os.environ["HARNESS_SESSION"]
if session == "broke":
    sys.exit(3)
with open("progress.txt", "a") as f:
    f.write(session + "\\n")
if session in ("good", "flag"):
    with open("app.py", "a") as f:
        f.write("# " + {PLANTED!r} + "\\n")
if session == "flag":
    pathlib.Path("web").mkdir(exist_ok=True)
    pathlib.Path("web/.envrc").write_text("export PATH=$PWD/bin:$PATH\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-qm", "work " + {PLANTED!r}], check=True)
report = {{"state": "done", "summary": session + " done " + {PLANTED!r}, "next": ""}}
with open(os.environ["HARNESS_STATUS_FILE"], "w") as f:
    json.dump(report, f)
"""


def _repo(path: Path) -> GitRepo:
    repo = make_repo(path)
    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "the agent script")
    return repo


def _session(repo: GitRepo, session: str, code: int, *extra: str) -> None:
    r = harness(*run_args(session, *extra, cmd="python3 agent.py", iterations=5), cwd=repo.path)
    assert r.code == code, r.stderr


def _make_old(repo: GitRepo, session: str, days: int) -> None:
    """Move a finished session's times `days` into the past, in its journal: run-summary.json's createdAt,
    updatedAt and finishedAt, and each iteration's startedAt and createdAt (what --since reads)."""
    journal = repo.journal(session)
    for path in [journal / "run-summary.json", *sorted(journal.glob("iteration-*.json"))]:
        data = json.loads(path.read_text())
        for key in ("createdAt", "updatedAt", "finishedAt", "startedAt"):
            if data.get(key):
                then = datetime.fromisoformat(data[key]) - timedelta(days=days)
                data[key] = then.astimezone(UTC).isoformat()
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GitRepo]:
    """Three repositories: `a` with a completed session whose check passed, a failed one and one whose journal
    is torn; `b` with a completed session that changed a flagged path, one three days old and a race of two
    racers (rc-2 wins); `c`, with one session, then deleted. Module-scoped (the module's tests run on one worker):
    the harness home is this module's own, set here."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("morning-home")
    mp.setenv("HARNESS_HOME", str(home))  # what the autouse harness_home does for one test, for the module
    mp.setenv("HARNESS_CONTAINER_LABELS", f"io.solo-harness.test={TEST_RUN_LABEL}")
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("morning-config")))
    mp.delenv("HARNESS_JOURNAL_ROOT", raising=False)
    root = tmp_path_factory.mktemp("morning-repos")
    a, b, c = _repo(root / "a"), _repo(root / "b"), _repo(root / "c")
    _session(a, "good", 0, "--check", "test -s progress.txt")
    _session(a, "broke", 22)
    _session(b, "flag", 0)
    _session(b, "old", 0)
    race = harness("race", "--session", "rc", "--objective", "x", "--n", "2", "--agent-cmd", "python3 agent.py",
                   "--check", "grep -q rc-2 progress.txt", "--max-iterations", "1", "--json", cwd=b.path)  # fmt: skip
    assert race.code == 0, race.stderr  # rc-2 wins; rc-1's check fails
    _make_old(b, "old", days=3)
    _session(c, "lost", 0)
    shutil.rmtree(c.path)
    torn = a.journal("torn")
    torn.mkdir(parents=True)
    (torn / "run-summary.json").write_text('{"schemaVersion": 1, "kind": "solo-harness.run-summary", "sess')
    yield {"a": a, "b": b, "c": c, "home": home}  # type: ignore[misc]
    mp.undo()


@pytest.fixture
def home(night: dict[str, GitRepo], monkeypatch: pytest.MonkeyPatch) -> dict[str, GitRepo]:
    monkeypatch.setenv("HARNESS_HOME", str(night["home"]))
    return night


def _report(cwd: Path, *args: str) -> MorningReport:
    r = harness("report", "--all", "--format", "json", *args, cwd=cwd)
    assert r.code == 0, r.stderr
    return MorningReport.model_validate_json(r.stdout)  # the JSON is the typed model


def test_every_session_of_every_repository_with_its_verdict(home: dict[str, GitRepo], tmp_path: Path) -> None:
    a, b, c = home["a"], home["b"], home["c"]
    page = _report(tmp_path)  # from a directory outside every repository
    repos = {r.repo: r for r in page.repositories}
    assert sorted(repos) == sorted(str(x.path) for x in (a, b, c))
    states = {(s.repo, s.session_id): (s.status.value, s.stop_reason and s.stop_reason.value)
              for r in page.repositories for s in r.sessions}  # fmt: skip
    assert states == {
        (str(a.path), "good"): ("completed", "agent-done"),
        (str(a.path), "broke"): ("failed", "repeated-failures"),
        (str(b.path), "flag"): ("completed", "agent-done"),
        (str(b.path), "old"): ("completed", "agent-done"),
        (str(b.path), "rc-1"): ("stopped", "max-iterations"),
        (str(b.path), "rc-2"): ("completed", "agent-done"),
    }
    good = next(s for s in repos[str(a.path)].sessions if s.session_id == "good")
    assert good.last_check is not None and good.last_check.passed and good.check_command == "test -s progress.txt"
    assert [(it.iteration, it.outcome.value) for it in good.iterations] == [(1, "done")]
    broke = next(s for s in repos[str(a.path)].sessions if s.session_id == "broke")
    assert [it.outcome.value for it in broke.iterations] == ["agent-error"] * 3 and broke.diff is not None
    assert broke.diff.files == []  # no commit: nothing to show
    # The torn journal is listed with its error; the other sessions of its repository are still there.
    assert [(p.session_id, "not valid JSON" in p.error) for p in repos[str(a.path)].problems] == [("torn", True)]
    # The deleted repository is listed as missing, not a crash.
    assert repos[str(c.path)].missing is not None and repos[str(c.path)].sessions == []
    assert page.totals.sessions == 6 and page.totals.problems == 1 and page.totals.missing_repos == 1
    assert page.totals.by_state == {"completed": 4, "failed": 1, "stopped": 1} and page.totals.flagged_sessions == 1
    # The race's racers are sessions of the page, each knowing its race, and the race lists them.
    [race] = repos[str(b.path)].races
    assert (race.session_id, race.racers, race.winners, race.state) == ("rc", ["rc-1", "rc-2"], ["rc-2"], "finished")
    assert {s.session_id: s.race for s in repos[str(b.path)].sessions} == {
        "flag": None, "old": None, "rc-1": "rc", "rc-2": "rc"
    }  # fmt: skip
    assert repos[str(a.path)].races == []

    flag = next(s for s in repos[str(b.path)].sessions if s.session_id == "flag")
    assert flag.verdict.startswith("completed  1 iteration, 1 commit, 1 flagged")
    assert flag.diff is not None
    # Flagged first, although git lists app.py before web/.envrc.
    assert [(f.path, f.flagged) for f in flag.diff.files] == [
        ("web/.envrc", True), ("app.py", False), ("progress.txt", False)
    ]  # fmt: skip
    envrc, app = flag.diff.files[0], flag.diff.files[1]
    assert envrc.why == ["run by a tool without review"] and "+export PATH=$PWD/bin:$PATH" in envrc.patch
    assert f"+# {PLANTED}" in app.patch and (app.insertions, app.deletions) == (1, 0) and not app.truncated


def test_since_leaves_out_what_was_last_active_before(home: dict[str, GitRepo], tmp_path: Path) -> None:
    b = home["b"]
    page = _report(tmp_path, "--since", "12h")
    sessions = {(s.repo, s.session_id) for r in page.repositories for s in r.sessions}
    assert (str(b.path), "old") not in sessions and (str(b.path), "flag") in sessions and len(sessions) == 5
    assert page.since is not None and abs((datetime.now(UTC) - page.since) - timedelta(hours=12)) < timedelta(minutes=5)
    longer = _report(tmp_path, "--since", "4d")
    assert (str(b.path), "old") in {(s.repo, s.session_id) for r in longer.repositories for s in r.sessions}
    bad = harness("report", "--all", "--since", "yesterday", cwd=tmp_path)
    assert bad.code == 2 and bad.stderr.count("\n") == 1 and "--since" in bad.stderr


def test_repo_with_all_keeps_that_repositorys_sessions_only(home: dict[str, GitRepo], tmp_path: Path) -> None:
    b = home["b"]
    page = _report(tmp_path, "--repo", str(b.path))
    assert [r.repo for r in page.repositories] == [str(b.path)] and page.repo == str(b.path)
    assert sorted(s.session_id for s in page.repositories[0].sessions) == ["flag", "old", "rc-1", "rc-2"]
    assert [race.session_id for race in page.repositories[0].races] == ["rc"]
    assert page.totals.sessions == 4 and page.totals.missing_repos == 0 and page.totals.problems == 0
    recent = _report(b.path, "--repo", ".", "--since", "12h")  # with --since, and relative to where it runs
    assert sorted(s.session_id for s in recent.repositories[0].sessions) == ["flag", "rc-1", "rc-2"]
    gone = harness("report", "--all", "--repo", str(home["c"].path), cwd=tmp_path)  # deleted: not a repository
    assert gone.code == 5 and gone.stderr.count("\n") == 1 and gone.stdout == ""


def test_the_json_of_a_finished_session_and_of_a_race_loads_back(home: dict[str, GitRepo]) -> None:
    b = home["b"]
    printed = harness("report", "--session", "flag", "--format", "json", cwd=b.path)
    assert printed.code == 0, printed.stderr
    loaded = SessionReport.model_validate_json(printed.stdout)
    built = build_report(ReportRequest(repo=b.path, session="flag"))
    assert list(built.findings.reasons) == ["web/.envrc"]  # control: a finding to carry
    assert loaded.model_copy(update={"generated_at": built.generated_at}) == built
    assert loaded.model_dump_json(by_alias=True, indent=2) + "\n" == printed.stdout
    race = harness("report", "--session", "rc", "--format", "json", cwd=b.path)
    assert race.code == 0, race.stderr
    status = RaceStatus.model_validate_json(race.stdout)
    assert status.winners == ["rc-2"] and [r.session_id for r in status.racers] == ["rc-1", "rc-2"]
    again = race_status(b.path, "rc")
    assert status.model_copy(update={"generated_at": again.generated_at}) == again
    assert status.model_dump_json(by_alias=True, indent=2) + "\n" == race.stdout


def test_gc_forgets_the_repositories_gone_from_disk_and_only_those(tmp_path: Path) -> None:
    there, gone = make_repo(tmp_path / "there"), make_repo(tmp_path / "gone")
    for repo in (there, gone):
        remember_repo(repo.path)  # as a session in it does (this test's own harness home)
    shutil.rmtree(gone.path)
    r = harness("gc", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.json()["forgottenRepos"] == [str(gone.path)]
    assert list(known_repos()) == [there.path]
    text = harness("gc", cwd=tmp_path)
    assert text.code == 0 and "forgot 0 repositories gone from disk" in text.stdout, text.stderr


def test_markdown_page_keeps_the_diff_in_code_blocks(home: dict[str, GitRepo], tmp_path: Path) -> None:
    r = harness("report", "--all", cwd=tmp_path)
    assert r.code == 0, r.stderr
    md = r.stdout
    assert md.startswith("# Sessions on this machine\n")
    flag = md.index("### flag: completed")
    assert md.index("<code>web/.envrc</code>", flag) < md.index("<code>app.py</code>", flag)
    # The planted markup is only ever inside a fenced code block (shown as text) or escaped.
    for at in [i for i in range(len(md)) if md.startswith(PLANTED, i)]:
        before = md[:at]
        assert before.count("\n```diff\n") == before.count("\n```\n") + 1, md[at - 300 : at]
    assert "**torn: cannot be read:**" in md and "**Missing:**" in md
    race = md.index("### race rc: finished")
    assert race < md.index("### rc-1: stopped") < md.index("### rc-2: completed")
    assert "winners: rc-2" in md[race:]


def test_html_page_is_inert_and_a_browser_shows_it(home: dict[str, GitRepo], tmp_path: Path) -> None:
    page = tmp_path / "morning.html"
    r = harness("report", "--all", "--format", "html", "--output", str(page), cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.stdout == "" and page.is_file()
    html = page.read_text()
    assert "<script" not in html.lower() and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html
    assert (
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        in html
    )

    shot = tmp_path / "morning.png"
    taken = browse(page, tmp_path, f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = browse(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    tree = dom.stdout
    assert "<title>harness: sessions on this machine</title>" in tree  # the planted script never set it
    shown = {"good": "completed", "broke": "failed", "flag": "completed", "old": "completed", "rc-1": "stopped",
             "rc-2": "completed"}  # fmt: skip
    for session, status in shown.items():
        assert f'data-session="{session}" data-status="{status}"' in tree
    # The racers are shown under their race, in the order they started.
    race = tree.index('<section class="race" data-race="rc">')
    end = tree.index("</section>", race)
    assert race < tree.index('data-session="rc-1"') < tree.index('data-session="rc-2"') < end
    assert '<li data-session="torn">' in tree and 'class="missing"' in tree
    # Every file's diff is collapsed: no <details> is open.
    assert tree.count('<details class="file') >= 5 and "<details open" not in tree and " open=" not in tree
    flag = tree.index('data-session="flag"')
    assert tree.index('data-path="web/.envrc"', flag) < tree.index('data-path="app.py"', flag)
    assert tree.index('<details class="file flagged-file" data-path="web/.envrc">', flag) > 0
    # The planted script is text in the DOM, in the diff and in the summary: no element was made of it.
    assert "<script" not in tree.lower()
    assert "<span class=\"add\">+# &lt;script&gt;document.title='pwned'&lt;/script&gt;</span>" in tree
    assert "flag done &lt;script&gt;document.title='pwned'&lt;/script&gt;" in tree
    # One chart per session: a bar per iteration, coloured by its outcome.
    assert tree.count('<svg class="chart"') == 6
    assert tree.count('data-outcome="agent-error"') == 3 and tree.count('data-outcome="done"') == 4
    assert tree.count('data-outcome="check-failed"') == 1
