"""A session of the user's repository, opened: the repository's top found by git, the session's journal
below it. And the harness's refs there: the branch `harness/<session>` and the tips that `discard` kept
under refs/harness-discarded/, which `restore` brings back and `gc` expires.

`open_session` is how every command that names one session (`--repo`, `--session`) finds it;
`repo_state` is one look at a repository shared by all of its sessions (`status`, `list`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from runner.base.errors import HarnessError, InvalidStateError, NotARepositoryError
from runner.base.names import branch_for, validate_session
from runner.base.paths import sessions_root
from runner.record.gitops import HostGit
from runner.record.journal import Journal


@dataclass(frozen=True)
class SessionRef:
    """A session as the user names it: the repository (any directory in it) and the session's id."""

    repo: Path
    session: str


@dataclass(frozen=True)
class OpenSession:
    git: HostGit  # on the user's repository
    top: Path  # the repository's top directory
    journal: Journal  # the session's (it need not exist: `journal.require()` says so)


@contextmanager
def open_session(repo: Path, session: str) -> Iterator[OpenSession]:
    """The session `session` of the repository holding `repo`; the session's id is checked once the
    repository is found."""
    with HostGit(repo.resolve()) as git:
        top = git.info().top
        yield OpenSession(git=git, top=top, journal=Journal.for_repo(top, validate_session(session)))


def is_race(repo: Path, session: str) -> bool:
    """Whether `session` names a race (runner/usecases/race.py): the commands given a race's id act on its
    racers. False for anything else, a broken name or repository included (the command then says what)."""
    try:
        with open_session(repo, session) as opened:
            return opened.journal.is_race()
    except HarnessError:
        return False


def race_of(repo: Path, session: str) -> str | None:
    """The race whose racer `session` is (`S` for a racer `S-k` listed in S's race.json), else None."""
    race, dash, k = session.rpartition("-")
    if not dash or not k.isdigit() or not is_race(repo, race):
        return None
    with open_session(repo, race) as opened:
        record = opened.journal.read_race()
    return race if any(racer.session_id == session for racer in record.racers) else None


def refuse_if_running(journal: Journal) -> None:
    """For what a running supervisor would race: merge, discard."""
    if journal.supervisor_alive():
        s = journal.session
        raise InvalidStateError(f"session {s!r} is running: stop it first ('harness stop --session {s}')")


def harness_command(*args: str, repo: Path) -> str:
    """A command line to paste into a shell, from anywhere (the repository is named)."""
    return shlex.join(["harness", *args, "--repo", str(repo)])


DISCARDED_PREFIX = "refs/harness-discarded"  # <prefix>/<session>/<UTC time of the discard>: an undo
_STAMP = "%Y%m%dT%H%M%S.%fZ"  # sorts as it happened; a valid ref name component


def discarded_ref(session: str, when: datetime) -> str:
    """Where `discard` keeps the tip of a session's branch."""
    return f"{DISCARDED_PREFIX}/{session}/{when.astimezone(UTC).strftime(_STAMP)}"


def discarded_at(ref: str) -> datetime | None:
    """When the discard that made `ref` happened (None: not a name discard makes)."""
    try:
        return datetime.strptime(ref.rsplit("/", 1)[-1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def newest_first(found: dict[str, str]) -> dict[str, str]:
    """Discarded tips (ref -> commit), the newest discard first."""
    return dict(sorted(found.items(), key=lambda kv: discarded_at(kv[0]) or datetime.min.replace(tzinfo=UTC),
                       reverse=True))  # fmt: skip


@dataclass(frozen=True)
class RepoState:
    """One look at a repository, shared by all of its sessions in one command."""

    top: Path
    common_dir: Path
    git_dir: Path  # this working tree's own (its index), which differs from common_dir in a linked worktree
    head: str | None  # HEAD's commit, where a merge would go (None: unborn)
    sessions_root: Path  # where its sessions' journals are (read from the environment once)
    refs: dict[str, str] = field(default_factory=dict)  # the harness's branches and discarded tips -> object
    _asked: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def journal(self, session: str) -> Journal:
        return Journal.under(self.sessions_root, session)

    def excludes_in_config(self, git: HostGit) -> str | None:
        """core.excludesFile of the repository's own config, which check-ignore reads when the user's
        global config names none (asked once, and only then)."""
        if "excludes" not in self._asked:
            proc = git.run("config", "--path", "--get", "core.excludesFile", check=False)
            self._asked["excludes"] = proc.stdout.strip() or None
        return self._asked["excludes"]

    def branch_commit(self, git: HostGit, session: str) -> str | None:
        ref = branch_for(session)
        found = self.refs.get(ref)
        if found is None or found.startswith("commit "):
            return found.removeprefix("commit ") if found else None
        return git.ref_commit(ref)  # a tag object (or worse) where a commit should be: git peels it

    def discarded(self, session: str) -> str | None:
        """The newest discarded tip of the session's branch."""
        prefix = f"{DISCARDED_PREFIX}/{session}/"
        mine = {ref: obj.split(" ", 1)[1] for ref, obj in self.refs.items() if ref.startswith(prefix)}
        return next(iter(newest_first(mine)), None)


_REV_PARSE = ("rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir", "--absolute-git-dir")


def repo_state(git: HostGit) -> RepoState:
    """Three git commands: the repository's directories and HEAD, then the harness's refs."""
    proc = git.run(*_REV_PARSE, "HEAD^{commit}", check=False)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:  # an unborn HEAD (or a file of that name), or not a repository at all
        proc = git.run(*_REV_PARSE, check=False)
        if proc.returncode != 0:
            raise NotARepositoryError(f"{git.repo} is not a git repository (or has no working tree)")
        lines = [*proc.stdout.splitlines()[:3], git.ref_commit("HEAD") or ""]
    top, common, git_dir, head = lines[:4]
    out = git.run("for-each-ref", "--format=%(refname) %(objecttype) %(objectname)", "refs/heads/harness/",
                  f"{DISCARDED_PREFIX}/").stdout  # fmt: skip
    refs = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    root = Path(top).resolve()
    return RepoState(top=root, common_dir=Path(common).resolve(), git_dir=Path(git_dir).resolve(), head=head or None,
                     sessions_root=sessions_root(root), refs=refs)  # fmt: skip
