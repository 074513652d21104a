"""`status` of a repository and `list`: one line per session to scan in the morning, and a race as one line
with its racers under it (docs/race.md). Verdicts hold no agent-written text; errors pass through neutralise()."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runner.base.limits import format_duration
from runner.base.output import neutralise
from runner.cli.render import STATE_STYLE, _count, _out

if TYPE_CHECKING:
    from rich.text import Text

    from runner.usecases.status import RaceTag, SessionProblem, SessionStatus


def verdict_text(st: SessionStatus) -> Text:
    """The session's verdict line with its state coloured (a verdict holds no agent-written text)."""
    from rich.text import Text

    state, _, rest = st.verdict.partition("  ")
    return Text.assemble((state, STATE_STYLE[st.status]), "  " + rest if rest else "")


RACE_STYLE = {"running": "bold cyan", "interrupted": "bold yellow", "finished": "bold green"}


def race_text(race: RaceTag) -> Text:
    """'finished (all-ended), 3 racers: rc-2 won', the state coloured (ids and states only)."""
    from rich.text import Text

    end = f" ({race.end_reason})" if race.end_reason else ""
    style = RACE_STYLE[race.state] if race.winners or race.state != "finished" else "bold yellow"
    if race.winners:
        won = f"{', '.join(race.winners)} won"
    else:
        won = "no winner" if race.state == "finished" else "no winner yet"
    return Text.assemble((race.state, style), f"{end}, {_count(len(race.racers), 'racer')}: {won}")


def _grouped(
    items: Sequence[SessionStatus | SessionProblem],
) -> list[tuple[int, SessionStatus | SessionProblem | RaceTag, str | None]]:
    """The lines of a list, each with its depth and repository: a race once, where its first racer would be, with
    its racers (those listed) under it in the race's order."""
    from runner.usecases.status import SessionStatus

    racers: dict[tuple[str, str], dict[str, SessionStatus]] = {}  # (repository, race) -> its racers listed
    for item in items:
        if isinstance(item, SessionStatus) and item.race is not None:
            racers.setdefault((item.repo, item.race.session_id), {})[item.session_id] = item
    found: list[tuple[int, SessionStatus | SessionProblem | RaceTag, str | None]] = []
    for item in items:
        if not isinstance(item, SessionStatus) or item.race is None:
            found.append((0, item, item.repo if isinstance(item, SessionStatus) else None))
            continue
        mine = racers.pop((item.repo, item.race.session_id), None)
        if mine is not None:  # the race's first racer listed: the race, then its racers
            found.append((0, item.race, item.repo))
            found += [(1, mine[r], item.repo) for r in item.race.racers if r in mine]
    return found


def status_list(items: Sequence[SessionStatus | SessionProblem], *, with_repo: bool = False) -> None:
    """One line per session to scan in the morning (`list`: under a line naming each repository); a race is one
    line, its racers under it."""
    from rich.text import Text

    from runner.usecases.status import SessionProblem, SessionStatus

    if not items:
        _out().print("no sessions" if with_repo else "no sessions in this repository")
        return
    lines = _grouped(items)
    width = max(2 * depth + len(item.session_id) for depth, item, _ in lines)
    now = datetime.now(UTC)
    shown_repo = None
    for depth, item, repo in lines:
        if with_repo and repo != shown_repo and repo is not None:
            _out().print(Text(repo, style="dim"))
            shown_repo = repo
        indent = ("  " if with_repo else "") + "  " * depth
        line = Text(indent + item.session_id.ljust(width - 2 * depth) + "  ", style="bold")
        if isinstance(item, SessionProblem):
            line.append(f"unreadable: {neutralise(item.error)}", style="red")
            _out().print(line)
            continue
        if isinstance(item, SessionStatus):
            line.append_text(verdict_text(item))
        else:
            line.append("race ", style="dim")
            line.append_text(race_text(item))
        line.append(f"  ({format_duration((now - item.created_at).total_seconds())} ago)", style="dim")
        _out().print(line)
