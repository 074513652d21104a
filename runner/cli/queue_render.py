"""Rendering of `harness queue`: who holds a slot, then who waits, in order (JSON with `--json`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.base.errors import ExitCode
from runner.cli.render import _count, _out, print_json

if TYPE_CHECKING:
    from runner.usecases.queue import QueueView


def render_queue(view: QueueView, as_json: bool) -> int:
    """`harness queue`: who holds a slot, then who waits, in order."""
    from rich.text import Text

    if as_json:
        print_json(view)
        return ExitCode.OK
    out = _out()
    out.print(Text(f"running: {_count(len(view.running), 'slot')} held", style="bold"))
    for held in view.running:
        since = held.started_at.astimezone().strftime("%H:%M")
        line = Text(f"  slot {held.slot}  {held.session_id}  ")
        line.append(f"{held.repo}  pid {held.pid}, since {since}", style="dim")
        out.print(line)
    out.print(Text(f"queued: {_count(len(view.queued), 'session')}", style="bold"))
    for q in view.queued:
        line = Text(f"  {q.position}  {q.session_id}  ")
        if q.waiting:
            line.append(f"waiting for one of {q.slots} slots" if q.slots else "waiting", style="blue")
        else:
            line.append("parked: its supervisor is gone (resume takes its place back)", style="yellow")
        line.append(f"  {q.repo}, queued {q.queued_at.astimezone().strftime('%H:%M')}", style="dim")
        out.print(line)
    return ExitCode.OK
