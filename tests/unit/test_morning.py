"""`harness report --all` on recorded journals and real git repositories (no engine): the machine's index of
repositories, the chart of cost per iteration, the caps on each session's diff, an empty machine, bad options."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from runner.base.paths import repo_key
from runner.cli.morning_render import CHART_HEIGHT, to_html, to_markdown
from runner.record.journal import load_model, save_model
from runner.record.models import RunOwner, utcnow
from runner.usecases import morning
from runner.usecases.known_repos import (
    KnownRepo,
    forget_gone_repos,
    known_repos,
    known_repos_dir,
    remember_repo,
)
from runner.usecases.morning import MorningReport, MorningRequest, build_morning
from tests.helpers import GitRepo, harness, make_repo
from tests.unit.test_report import EVIL, record


def test_the_index_names_each_repository_once_with_the_copies_owners(tmp_path: Path, harness_home: Path) -> None:
    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    remember_repo(one)
    remember_repo(one)  # once
    remember_repo(two)
    (known_repos_dir() / "junk.json").write_text("{not json")  # unreadable: skipped
    run_dir = harness_home / "runs" / "abc-s1"  # a copy made before the index existed
    run_dir.mkdir(parents=True)
    save_model(run_dir / "owner.json", RunOwner(session_id="s1", repo=str(three), journal_dir="/j"))
    assert list(known_repos()) == sorted([one, two, three])
    assert len(list(known_repos_dir().glob("*.json"))) == 3


def test_a_repository_gone_is_missing_until_it_was_last_used_before_since(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    remember_repo(gone)
    entry = known_repos_dir() / f"{repo_key(gone)}.json"
    first = load_model(entry, KnownRepo)
    old = first.model_copy(update={"last_used_at": utcnow() - timedelta(days=3)})
    save_model(entry, old)
    [shown] = build_morning(MorningRequest()).repositories
    assert (
        shown.repo == str(gone) and shown.missing == "the repository is gone (moved or deleted since its sessions ran)"
    )
    assert build_morning(MorningRequest(since_seconds=12 * 3600)).repositories == []
    assert len(build_morning(MorningRequest(since_seconds=4 * 86400)).repositories) == 1
    remember_repo(gone)  # used again: its first sighting is kept, its last use is now
    again = load_model(entry, KnownRepo)
    assert again.first_seen_at == first.first_seen_at and again.last_used_at > old.last_used_at
    assert len(build_morning(MorningRequest(since_seconds=12 * 3600)).repositories) == 1


def test_an_empty_machine_is_a_clear_page(tmp_path: Path) -> None:
    md = harness("report", "--all", cwd=tmp_path)
    assert md.code == 0, md.stderr
    assert "No session to show: none has run on this machine." in md.stdout
    page = harness("report", "--all", "--since", "12h", "--format", "html", cwd=tmp_path)
    assert page.code == 0 and '<p id="empty">No session to show: none has run on this machine since then.</p>' in (
        page.stdout
    )
    data = harness("report", "--all", "--json", cwd=tmp_path)
    assert data.code == 0
    empty = MorningReport.model_validate_json(data.stdout)
    assert empty.repositories == [] and empty.totals.sessions == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "--session"),
        (("--all", "--session", "s1"), "--all"),
        (("--session", "s1", "--since", "12h"), "--since goes with --all"),
        (("--all", "--since", "-3h"), "--since"),
        (("--all", "--format", "pdf"), "--format"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    r = harness("report", *args, cwd=tmp_path)
    assert r.code == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_the_chart_shows_cost_and_outcome_per_iteration(repo: GitRepo) -> None:
    record(repo)  # iteration 1: working, $1.23; iteration 2: done, $0.01
    remember_repo(repo.path)
    page = build_morning(MorningRequest())
    [session] = page.repositories[0].sessions
    assert (session.cost_usd, session.tokens) == (1.23, 1500)  # the gateway's count for the session
    html = to_html(page)
    bars = re.findall(r'<rect class="bar (\w+)" data-outcome="([\w-]+)" x="[\d.]+" y="([\d.]+)" width="[\d.]+" '
                      r'height="([\d.]+)"', html)  # fmt: skip
    assert [(kind, outcome) for kind, outcome, _, _ in bars] == [("working", "working"), ("done", "done")]
    (_, _, y1, h1), (_, _, y2, h2) = bars
    assert float(h1) > 8 * float(h2)  # $1.23 against $0.01
    assert float(y1) + float(h1) == float(y2) + float(h2) == CHART_HEIGHT - 14  # on one baseline
    assert "<title>iteration 1: working, $1.23, 10m00s</title>" in html
    assert "cost per iteration, highest $1.23" in html
    assert "cost per iteration: `█ `; outcomes: 1 working · 2 done" in to_markdown(page)
    # The agent's summary is text on the page.
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in html and "\x1b" not in to_markdown(page)
    assert EVIL not in html


def test_a_large_diff_is_cut_with_a_truncated_line(repo: GitRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    record(repo)
    repo.git("checkout", "-q", "harness/night")
    (repo.path / "big.txt").write_text("".join(f"line {n} `````\n" for n in range(5000)))
    (repo.path / "zz.txt").write_text("last\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "more")
    repo.git("checkout", "-q", "main")
    summary = json.loads((repo.journal("night") / "run-summary.json").read_text())
    summary["headCommit"] = repo.git("rev-parse", "harness/night")
    (repo.journal("night") / "run-summary.json").write_text(json.dumps(summary))
    remember_repo(repo.path)
    monkeypatch.setattr(morning, "FILE_PATCH_BYTES", 4096)
    monkeypatch.setattr(morning, "SESSION_PATCH_BYTES", 4400)  # .envrc and app.py take about 300
    [session] = build_morning(MorningRequest()).repositories[0].sessions
    assert session.diff is not None
    files = {f.path: f for f in session.diff.files}
    assert [f.path for f in session.diff.files] == [".envrc", "app.py", "big.txt", "zz.txt"]  # .envrc: flagged
    big = files["big.txt"]
    assert big.truncated and len(big.patch.encode()) <= 4096 and big.patch.endswith("`````\n")
    assert (big.insertions, big.deletions) == (5000, 0)  # the numbers are the whole file's
    assert files["zz.txt"].truncated and files["zz.txt"].patch == ""  # past the session's cap: left out
    assert not files["app.py"].truncated and session.diff.truncated
    html = to_html(build_morning(MorningRequest()))
    assert html.count('<p class="truncated">truncated') == 2
    md = to_markdown(build_morning(MorningRequest()))
    assert "\n``````diff\n" in md  # a fence longer than the file's backticks: they cannot close it

    monkeypatch.setattr(morning, "SESSION_FILES", 2)
    [session] = build_morning(MorningRequest()).repositories[0].sessions
    assert session.diff is not None and [f.path for f in session.diff.files] == [".envrc", "app.py"]
    assert session.diff.omitted_files == 2 and "2 more files not shown." in to_html(build_morning(MorningRequest()))


def test_a_shared_journal_root_shows_each_session_under_its_own_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_JOURNAL_ROOT", str(tmp_path / "journals"))
    a, b = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    record(a, "one")
    record(b, "two")
    remember_repo(a.path)
    remember_repo(b.path)
    page = build_morning(MorningRequest())
    assert [(r.repo, [s.session_id for s in r.sessions]) for r in page.repositories] == [
        (str(a.path), ["one"]), (str(b.path), ["two"])
    ]  # fmt: skip


def test_a_session_git_cannot_print_as_utf8_is_listed_and_the_others_shown(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    record(repo, "latin")
    record(repo, "fine")
    repo.git("checkout", "-q", "harness/latin")
    with open(bytes(repo.path) + b"/caf\xe9.txt", "wb") as f:  # a name that is not UTF-8
        f.write(b"\xff\xfe\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "latin-1")
    repo.git("checkout", "-q", "main")
    remember_repo(repo.path)
    [shown] = build_morning(MorningRequest()).repositories
    assert [s.session_id for s in shown.sessions] == ["fine"]
    assert [p.session_id for p in shown.problems] == ["latin"] and "not UTF-8" in shown.problems[0].error


def test_gc_forgets_the_repositories_gone_from_disk_and_never_one_that_is_there(tmp_path: Path) -> None:
    kept, gone, moved, unmade = (make_repo(tmp_path / name) for name in ("kept", "gone", "moved", "unmade"))
    linked = tmp_path / "linked"  # a worktree of `kept`: its .git is a file
    kept.git("worktree", "add", "-q", str(linked))
    bare_dir = tmp_path / "plain"  # a directory that never was a repository
    bare_dir.mkdir()
    for path in (kept.path, gone.path, moved.path, unmade.path, linked, bare_dir):
        remember_repo(path)
    (known_repos_dir() / "torn.json").write_text("{not json")  # unreadable: left alone
    shutil.rmtree(gone.path)
    moved.path.rename(tmp_path / "elsewhere")
    shutil.rmtree(unmade.path / ".git")  # the directory is there, the repository is not
    assert forget_gone_repos() == sorted(str(p) for p in (bare_dir, gone.path, moved.path, unmade.path))
    assert list(known_repos()) == sorted([kept.path, linked])
    assert sorted(p.name for p in known_repos_dir().iterdir()) == sorted(
        [f"{repo_key(kept.path)}.json", f"{repo_key(linked)}.json", "torn.json"]
    )
    assert forget_gone_repos() == []  # nothing more to drop
    (tmp_path / "elsewhere").rename(moved.path)  # back where it was: named again by its next session
    remember_repo(moved.path)
    assert moved.path in known_repos()


def test_all_with_repo_shows_that_repository_only_named_in_the_index_or_not(tmp_path: Path) -> None:
    a, b = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    record(a, "one")
    record(b, "two")
    remember_repo(a.path)
    remember_repo(b.path)  # control: without --repo, both repositories are on the page
    every = MorningReport.model_validate_json(harness("report", "--all", "--json", cwd=tmp_path).stdout)
    assert [r.repo for r in every.repositories] == [str(a.path), str(b.path)] and every.repo is None
    (b.path / "src").mkdir()
    r = harness("report", "--all", "--repo", str(b.path / "src"), "--json", cwd=tmp_path)  # any path in it
    assert r.code == 0, r.stderr
    only = MorningReport.model_validate_json(r.stdout)
    assert [(x.repo, [s.session_id for s in x.sessions]) for x in only.repositories] == [(str(b.path), ["two"])]
    assert only.repo == str(b.path) and only.totals.sessions == 1
    md = harness("report", "--all", "--repo", str(b.path), cwd=tmp_path).stdout
    assert md.startswith("# Sessions of ") and "| two |" in md and "| one |" not in md
    # A repository the index does not name (its sessions made before the index existed) is read all the same.
    c = make_repo(tmp_path / "c")
    record(c, "three")
    [shown] = build_morning(MorningRequest(repo=c.path)).repositories
    assert [s.session_id for s in shown.sessions] == ["three"]
    empty = make_repo(tmp_path / "empty")
    page = harness("report", "--all", "--repo", str(empty.path), "--format", "html", cwd=tmp_path)
    assert page.code == 0 and '<p id="empty">No session to show: none has run in this repository.</p>' in page.stdout
    nowhere = harness("report", "--all", "--repo", str(tmp_path), cwd=tmp_path)
    assert nowhere.code == 5 and nowhere.stderr.count("\n") == 1 and "not a git repository" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr and nowhere.stdout == ""
