"""Core of `harness hud`: one snapshot of a session for the live dashboard (the CLI redraws it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.gitops import HostGit
from runner.journal import Journal
from runner.models import CamelModel, IterationRecord
from runner.names import validate_session
from runner.output import neutralise
from runner.status import SessionStatus, session_status

LOG_TAIL_BYTES = 16 * 1024


class HudSnapshot(CamelModel):
    status: SessionStatus
    iterations: list[IterationRecord]
    current_iteration: int | None  # whose output `log_tail` shows
    log_tail: str  # neutralised: safe to print


@dataclass(frozen=True)
class HudRequest:
    repo: Path
    session: str
    lines: int = 15


def snapshot(request: HudRequest) -> HudSnapshot:
    with HostGit(request.repo.resolve()) as git:
        top = git.info().top
        session = validate_session(request.session)
        status = session_status(top, session, git)
    journal = Journal.for_repo(top, session)
    logs = sorted(journal.dir.glob("iteration-[0-9][0-9][0-9][0-9].log"))
    current = int(logs[-1].name[10:14]) if logs else None
    tail = ""
    if logs:
        with logs[-1].open("rb") as handle:
            size = logs[-1].stat().st_size
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
        tail = "\n".join(neutralise(text).splitlines()[-request.lines :])
    return HudSnapshot(status=status, iterations=journal.iterations(), current_iteration=current, log_tail=tail)
