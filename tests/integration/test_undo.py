"""Discard with undo, on the real engine and real git: the tip is kept, restore brings it back, gc expires it."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import GitRepo, Result, harness, run_args

pytestmark = pytest.mark.docker

PREFIX = "refs/harness-discarded"


def demo_run(repo: GitRepo, session: str) -> str:
    """A finished demo run (two commits on harness/<session>); returns the branch tip."""
    r = harness(*run_args(session, agent="demo", objective="two steps", iterations=3), cwd=repo.path)
    assert r.code == 0, r.stderr
    return repo.git("rev-parse", f"harness/{session}")


def discarded(repo: GitRepo, session: str = "") -> dict[str, str]:
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)", f"{PREFIX}/{session}".rstrip("/") + "/")
    return dict(line.split() for line in out.splitlines())


def branch(repo: GitRepo, session: str) -> str:
    return repo.git("rev-parse", "--verify", "-q", f"refs/heads/harness/{session}", check=False)


def run_printed(command: str, cwd: Path) -> Result:
    """Run a command line the harness printed for a person, as that person would (through our CLI)."""
    words = shlex.split(command)
    assert words[0] == "harness"
    return harness(*words[1:], cwd=cwd)


def test_discard_keeps_the_tip_and_the_printed_command_restores_it(repo: GitRepo, tmp_path: Path) -> None:
    tip = demo_run(repo, "night")
    copy = Path(harness("status", "--session", "night", "--json", cwd=repo.path).json()["workspace"])
    assert copy.exists()
    r = harness("discard", "--session", "night", cwd=repo.path)
    assert r.code == 0, r.stderr
    kept = discarded(repo, "night")
    assert list(kept.values()) == [tip]  # one ref, at the branch's tip
    ref = next(iter(kept))
    assert ref.startswith(f"{PREFIX}/night/") and ref in r.stdout
    assert branch(repo, "night") == "" and not copy.exists()
    assert not (repo.path / "memory/context-db/sessions/night").exists()
    restore_line = next(line.strip() for line in r.stdout.splitlines() if line.strip().startswith("harness restore"))
    assert restore_line == f"harness restore --session night --repo {repo.path}"

    back = run_printed(restore_line, cwd=tmp_path)  # from anywhere: the command names the repository
    assert back.code == 0, back.stderr
    assert branch(repo, "night") == tip and discarded(repo, "night") == {}
    assert repo.git("log", "--format=%s", "main..harness/night").splitlines() == ["demo: step 2", "demo: step 1"]
    again = harness("restore", "--session", "night", cwd=repo.path)
    assert again.code == 7 and "nothing of session 'night' was discarded" in again.stderr  # SESSION_NOT_FOUND


def test_restore_refuses_an_existing_branch_and_picks_the_ref_asked_for(repo: GitRepo) -> None:
    first = demo_run(repo, "twice")
    assert harness("discard", "--session", "twice", cwd=repo.path).code == 0
    repo.git("commit", "-q", "--allow-empty", "-m", "user work")  # the second run starts from another base
    second = demo_run(repo, "twice")
    assert second != first
    # A branch of that name exists: never replaced.
    refused = harness("restore", "--session", "twice", cwd=repo.path)
    assert refused.code == 11 and "branch harness/twice exists" in refused.stderr  # INVALID_STATE
    assert branch(repo, "twice") == second and list(discarded(repo, "twice").values()) == [first]

    assert harness("discard", "--session", "twice", "--json", cwd=repo.path).code == 0
    kept = discarded(repo, "twice")
    assert sorted(kept.values()) == sorted([first, second])
    older = next(name for name, commit in kept.items() if commit == first)
    bogus = harness("restore", "--session", "twice", "--ref", "20200101T000000.000000Z", cwd=repo.path)
    assert bogus.code == 2 and older in bogus.stderr  # USAGE, naming what there is
    outside = harness("restore", "--session", "twice", "--ref", "refs/heads/main", cwd=repo.path)
    assert outside.code == 2 and branch(repo, "twice") == ""  # only the session's own discarded tips

    # Without --ref: the newest discard (the second run); with it, the one named (by its last component).
    newest = harness("restore", "--session", "twice", "--json", cwd=repo.path)
    assert newest.code == 0, newest.stderr
    assert newest.json()["commit"] == second and branch(repo, "twice") == second
    repo.git("branch", "-D", "harness/twice")
    chosen = harness("restore", "--session", "twice", "--ref", older.rsplit("/", 1)[1], "--json", cwd=repo.path)
    assert chosen.code == 0, chosen.stderr
    assert chosen.json()["restoredFrom"] == older and branch(repo, "twice") == first and discarded(repo) == {}


def test_discard_keep_journal_keeps_only_the_journal(repo: GitRepo) -> None:
    tip = demo_run(repo, "kept")
    journal = repo.journal("kept")
    copy = Path(harness("status", "--session", "kept", "--json", cwd=repo.path).json()["workspace"])
    r = harness("discard", "--session", "kept", "--keep-journal", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    assert r.json()["keptJournal"] == str(journal) and str(journal.parent.parent) not in r.json()["removed"]
    assert {"iteration-0001.json", "iteration-0002.json", "run-summary.json"} <= {p.name for p in journal.iterdir()}
    assert (journal / "iteration-0002.log").is_file() and (journal / "objective.md").read_text() == "two steps\n"
    assert not copy.exists() and branch(repo, "kept") == "" and list(discarded(repo, "kept").values()) == [tip]
    # The kept journal still reads, and says where the branch went.
    st = harness("status", "--session", "kept", "--json", cwd=repo.path).json()
    assert st["headCommit"] is None and st["discardedRef"] == next(iter(discarded(repo, "kept")))


def test_gc_expires_discarded_tips_past_the_age(repo: GitRepo, harness_home: Path, tmp_path: Path) -> None:
    tip = demo_run(repo, "old")
    assert harness("discard", "--session", "old", cwd=repo.path).code == 0
    recent = next(iter(discarded(repo, "old")))
    # A tip discarded 15 days ago (the time of a discard is in its ref's name).
    stamp = (datetime.now(UTC) - timedelta(days=15)).strftime("%Y%m%dT%H%M%S.%fZ")
    stale = f"{PREFIX}/old/{stamp}"
    repo.git("update-ref", stale, tip)
    record = harness_home / "discarded"
    assert len(list(record.glob("*.json"))) == 1  # the discard named the repository for gc

    assert harness("gc", "--discarded-after", "soon", cwd=tmp_path).code == 2  # USAGE
    r = harness("gc", "--json", cwd=tmp_path)  # default 14 days, from outside the repository
    assert r.code == 0, r.stderr
    assert r.json()["expiredRefs"] == [f"{repo.path}:{stale}"]
    assert list(discarded(repo, "old")) == [recent]
    assert len(list(record.glob("*.json"))) == 1  # still a tip to expire later

    r = harness("gc", "--discarded-after", "1ms", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.json()["expiredRefs"] == [f"{repo.path}:{recent}"] and discarded(repo) == {}
    assert list(record.glob("*.json")) == []  # nothing left there: the repository is forgotten
    assert harness("restore", "--session", "old", cwd=repo.path).code == 7
