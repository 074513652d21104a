"""Rendering of typed results: rich text for people, JSON for `--json`. Only the CLI prints.

rich is imported by the functions that draw with it (and the consoles made at first use), so that a
command printing JSON never loads it."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from runner.base.errors import ExitCode, HarnessError
from runner.base.limits import format_duration, format_size
from runner.base.output import neutralise
from runner.record.models import RunState

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from runner.record.models import GatewayUsage, Limits, SetupRecord
    from runner.usecases.discard import DiscardResult
    from runner.usecases.hud import HudSnapshot
    from runner.usecases.plan import RunPlan
    from runner.usecases.report import SessionReport
    from runner.usecases.review.findings import Findings
    from runner.usecases.status import SessionProblem, SessionStatus

    out: Console  # stdout, for results
    err: Console  # stderr, for people


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Console:
    """`out` and `err`, made at first use."""
    if name in {"out", "err"}:
        return _console(name == "err")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _out() -> Console:
    return _console(False)


def _err() -> Console:
    return _console(True)


def setup_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Logs go to stderr, for people; configured here, at the entry point, only."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="harness: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def guarded(call: Callable[[], int]) -> int:
    """The one exit-code map: a command returns its code; a fault becomes one line on stderr."""
    try:
        return call()
    except HarnessError as exc:
        sys.stderr.write(f"harness: error: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("harness: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        sys.stderr.write(f"harness: internal error: {exc.__class__.__name__}: {exc} (HARNESS_DEBUG=1 shows details)\n")
        return ExitCode.FAILURE


STATE_STYLE = {
    RunState.COMPLETED: "bold green",
    RunState.RUNNING: "bold cyan",
    RunState.BLOCKED: "bold yellow",
    RunState.STOPPED: "bold yellow",
    RunState.INTERRUPTED: "bold yellow",
    RunState.FAILED: "bold red",
    RunState.STUCK: "bold yellow",
    RunState.QUEUED: "bold blue",
}


def print_json(data: BaseModel | Sequence[BaseModel] | dict[str, object]) -> None:
    if isinstance(data, BaseModel):
        payload: object = data.model_dump(mode="json", by_alias=True)
    elif isinstance(data, dict):
        payload = data
    else:
        payload = [item.model_dump(mode="json", by_alias=True) for item in data]
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def emit(result: BaseModel | dict[str, object], as_json: bool, line: str) -> int:
    """Print a command's result: as JSON, or as one line for people. Returns the success code."""
    from rich.text import Text

    if as_json:
        print_json(result)
    else:
        _out().print(Text(line))
    return ExitCode.OK


def discarded(result: DiscardResult, as_json: bool) -> int:
    """What `discard` removed, where the branch tip stays, and the command that undoes it."""
    from rich.text import Text

    if as_json:
        print_json(result)
        return ExitCode.OK
    _out().print(Text(f"discarded {result.session_id}: removed " + (", ".join(result.removed) or "nothing")))
    if result.kept_journal:
        _out().print(Text(f"kept the journal: {result.kept_journal}"))
    if result.kept_ref and result.restore_command:
        _out().print(Text(f"kept the branch tip as {result.kept_ref} until 'harness gc' expires it; undo with:"))
        _out().print(Text(f"  {result.restore_command}"))
    return ExitCode.OK


def report(result: SessionReport, fmt: str, output: Path | None) -> int:
    """The session report as markdown, HTML or JSON; on stdout, or atomically into a file."""
    from runner.cli.pages import write_page
    from runner.cli.report_render import to_html, to_markdown

    if fmt == "json":
        return write_page(result.model_dump_json(by_alias=True, indent=2) + "\n", output)
    return write_page(to_html(result) if fmt == "html" else to_markdown(result), output)


def safe(text: str | None) -> Text:
    """Agent-written text, with escape sequences neutralised, never interpreted as markup."""
    from rich.text import Text

    return Text(neutralise(text or ""))


def _session_grid(st: SessionStatus, *, detailed: bool) -> Table:
    """The facts of one session, as `status` and the hud's header show them."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    state = Text(st.status.value, style=STATE_STYLE[st.status])
    if st.stop_reason:
        state.append(f"  ({st.stop_reason.value})", style="dim")
    grid.add_row("session", st.session_id if detailed else f"{st.session_id}  [dim]{st.repo}[/dim]")
    if st.race is not None:
        from runner.cli.list_render import race_text

        grid.add_row("race", Text.assemble(f"a racer of {st.race.session_id}: ", race_text(st.race)))
    grid.add_row("state", state)
    if st.queue_position is not None:
        cap = f", waiting for one of {st.slots_in_force} slots" if st.slots_in_force else ""
        grid.add_row("queue", f"position {st.queue_position} of {st.queue_length}{cap} (harness queue)")
    if detailed and st.verdict:
        grid.add_row("verdict", st.verdict.partition("  ")[2])
    if st.setup is not None:
        grid.add_row("setup", Text(setup_line(st.setup), style="" if st.setup.passed else "red"))
    grid.add_row("iterations", f"{st.iteration_count} of {st.max_iterations}")
    if detailed and st.last_outcome:
        grid.add_row("last outcome", st.last_outcome.value)
    if detailed and st.last_summary:
        grid.add_row("last summary", safe(st.last_summary))
    ahead = ""
    if st.commits_ahead is not None:
        ahead = f"  ({_count(st.commits_ahead, 'commit')} ahead of {st.base_commit[:12]})"
    grid.add_row("branch", f"{st.branch}{ahead}")
    if st.usage.requests or st.max_cost_usd is not None:
        grid.add_row("model use", usage_line(st.usage, st.max_cost_usd))
    if st.findings.flagged:
        grid.add_row("review first", Text(", ".join(neutralise(p) for p in st.findings.flagged), style="bold yellow"))
    if st.error:
        grid.add_row("error", Text(st.error, style="red"))
    if detailed and st.keep_awake_text:
        grid.add_row("keep awake", st.keep_awake_text)
    if detailed:
        grid.add_row("journal", st.journal_dir)
    return grid


def status(st: SessionStatus) -> None:
    _out().print(_session_grid(st, detailed=True))


def session_status(st: SessionStatus, as_json: bool) -> int:
    """`status --session`: one session; the exit code says how it stands."""
    if as_json:
        print_json(st)
    else:
        status(st)
    return st.exit_code


def sessions(items: Sequence[SessionStatus | SessionProblem], as_json: bool, *, with_repo: bool = False) -> int:
    """`status` of a repository and `list`: one line per session, or a JSON list."""
    if as_json:
        print_json(items)
    else:
        from runner.cli.list_render import status_list

        status_list(items, with_repo=with_repo)
    return ExitCode.OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _of(used: str, limit: str | None) -> str:
    return f"{used} of {limit}" if limit else used


def _hud_rows(snap: HudSnapshot, grid: Table) -> None:
    """What only the live dashboard shows: time, the agent container's use, waiting notes."""
    from rich.text import Text

    times = [f"{format_duration(snap.elapsed_seconds)} elapsed"]
    if snap.time_left_seconds is not None and snap.max_time_seconds is not None:
        times.append(f"{format_duration(snap.time_left_seconds)} left of {format_duration(snap.max_time_seconds)}")
    grid.add_row("time", ", ".join(times))
    if snap.running_iteration is not None:
        line = f"{snap.running_iteration} running"
        if snap.iteration_elapsed_seconds is not None and snap.iteration_timeout_seconds is not None:
            left = max(0.0, snap.iteration_timeout_seconds - snap.iteration_elapsed_seconds)
            line += (
                f" for {format_duration(snap.iteration_elapsed_seconds)}, "
                f"{format_duration(left)} left of {format_duration(snap.iteration_timeout_seconds)}"
            )
        grid.add_row("iteration", line)
    if snap.backoff_until is not None:
        wait = (snap.backoff_until - snap.taken_at).total_seconds()
        grid.add_row("rate limited", f"next iteration in {format_duration(max(0.0, wait))}")
    if snap.usage_limit is not None:
        grid.add_row("usage limit", snap.usage_limit)
    if snap.container is not None:
        c = snap.container
        cpu = _of(f"{c.cpus:.2f} CPU", f"{c.cpus_limit:g}" if c.cpus_limit else None)
        memory = _of(format_size(c.memory_bytes), format_size(c.memory_limit_bytes) if c.memory_limit_bytes else None)
        use = f"{cpu}, {memory} memory"
        if c.pids is not None:
            use += f", {_of(str(c.pids), str(c.pids_limit) if c.pids_limit else None)} processes"
        grid.add_row("container", use)
    elif snap.container_error:
        grid.add_row("container", Text(f"use unknown: {snap.container_error}", style="dim"))
    if snap.notes_waiting:
        texts = [safe(note.text.splitlines()[0] if note.text.strip() else "") for note in snap.notes_waiting]
        waiting = Text(f"{_count(len(texts), 'note')} for the next iteration: ")
        waiting.append_text(Text(" | ").join(texts))
        grid.add_row("notes", waiting)


def hud(snap: HudSnapshot) -> Group:
    """The dashboard: the session, its iterations, and the tail of the current output (one snapshot)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    head = _session_grid(snap.status, detailed=False)
    _hud_rows(snap, head)
    table = Table(box=None, pad_edge=False, expand=True)
    priced = any(rec.usage is not None and rec.usage.requests for rec in snap.iterations)
    columns: list[tuple[str, dict[str, object]]] = [
        ("#", {"justify": "right"}),
        ("OUTCOME", {}),
        ("TIME", {"justify": "right"}),
        ("COMMITS", {"justify": "right"}),
    ]
    if priced:
        columns.append(("TOKENS / COST", {"justify": "right"}))
    columns.append(("SUMMARY", {"overflow": "fold", "ratio": 1}))
    for col, kw in columns:
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for rec in snap.iterations[-12:]:
        cells: list[str | Text] = [
            str(rec.iteration),
            rec.outcome.value,
            format_duration(rec.duration_seconds),
            str(len(rec.commits)),
        ]
        if priced:
            u = rec.usage
            cells.append(f"{_tokens(u.tokens.total)}, ${u.cost_usd:.2f}" if u and u.requests else "")
        cells.append(safe(rec.summary or rec.report_error or rec.harvest_error or ""))
        table.add_row(*cells)
    title = f"output of iteration {snap.current_iteration}" if snap.current_iteration else "no output yet"
    tail = Panel(Text(snap.log_tail or ""), title=title, title_align="left", border_style="dim")
    return Group(Panel(head, title="harness hud", title_align="left"), table, tail)


def flagged_warning(seen: Findings) -> None:
    """The review warnings of `diff`, on stderr (the patch is on stdout)."""
    from rich.text import Text

    from runner.record.flagged import REASON_TEXT

    if seen.flagged:
        head = "These changed paths can run code on this machine, or the check ran without them; review them first:"
        _err().print(Text(head, style="bold yellow"))
        for path, reasons in seen.reasons.items():
            line = Text(f"  {neutralise(path)}", style="yellow")
            why = [REASON_TEXT[r] for r in reasons]
            if path in seen.links:
                why.append(f"link to {neutralise(seen.links[path])!r}")
            if why:
                line.append(f"  ({'; '.join(why)})", style="dim")
            _err().print(line)
    blocked = [*seen.would_overwrite, *(p for p in seen.journal_paths if p not in seen.would_overwrite)]
    if blocked:
        _err().print(Text("'harness merge' refuses this branch: it would replace files git does not track here, "
                       "or write into the harness journal:", style="bold red"))  # fmt: skip
        for path in blocked:
            _err().print(Text(f"  {neutralise(path)}", style="red"))


def _budget(lim: Limits) -> str:
    parts = [f"${lim.max_cost_usd:.2f}" if lim.max_cost_usd is not None else "",
             f"{lim.max_tokens:,} tokens" if lim.max_tokens is not None else ""]  # fmt: skip
    return " and ".join(p for p in parts if p) or "none (--max-cost USD, --max-tokens N)"


def setup_line(record: SetupRecord) -> str:
    """The setup phase's last run in one line, for `status`, `hud` and the report: facts only (no command text)."""
    how = "passed" if record.passed else "timed out" if record.timed_out else f"failed (exit {record.exit_code})"
    runs = "" if record.runs == 1 else f", ran {record.runs} times"
    return f"{how} in {record.duration_seconds:.1f}s ({record.source}{runs}; log: {record.log_file})"


def _tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def usage_line(usage: GatewayUsage, max_cost: float | None) -> str:
    """'12 requests, 45.2k in + 3.1k out (+120.0k cached), $0.42 of $5.00', with what went wrong."""
    t = usage.tokens
    cached = t.cache_read_tokens + t.cache_write_tokens
    line = f"{usage.requests} request{'s' if usage.requests != 1 else ''}, {_tokens(t.input_tokens)} in + "
    line += f"{_tokens(t.output_tokens)} out" + (f" (+{_tokens(cached)} cached)" if cached else "")
    line += f", ${usage.cost_usd:.2f}" + (f" of ${max_cost:.2f}" if max_cost is not None else "")
    extra = [
        f"{usage.unpriced_requests} priced by fallback" if usage.unpriced_requests else "",
        f"{usage.rate_limited} rate limited" if usage.rate_limited else "",
        f"{usage.refused_budget} refused over budget" if usage.refused_budget else "",
    ]
    extra = [e for e in extra if e]
    return line + (f" ({'; '.join(extra)})" if extra else "")


def plan(p: RunPlan) -> None:
    _out().print(plan_grid(p))
    _out().print("[dim]dry run: nothing was created[/dim]")


def plan_grid(p: RunPlan) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    lim = p.limits
    rows = [
        ("session", p.session),
        ("repository", p.repo),
        ("base", f"{p.base_ref} ({p.base_commit[:12]})"),
        ("branch", p.branch),
        ("copy", p.workspace),
        ("journal", p.journal_dir),
        ("image", f"{p.image} ({p.image_state})"),
        ("agent", f"{p.agent.name}: {' '.join(p.agent.command)}"),
        ("check", p.check or "none: the agent's 'done' completes the run"),
        *([("setup", f"{p.setup.command} ({p.setup.source})")] if p.setup else []),
        ("user", p.user),
        ("network", p.network + (f": only {', '.join(p.allow_hosts)}" if p.allow_hosts else ": none, loopback only")),
        (
            "model gateway",
            f"{p.gateway.in_container} in the container; host keys for "
            + (", ".join(p.gateway.keys_present) or "no provider (set ANTHROPIC_API_KEY or OPENAI_API_KEY)"),
        ),
        *[(f"{provider} credential", used) for provider, used in sorted(p.gateway.credentials.items())],
        ("budget", _budget(lim)),
        (
            "limits",
            f"{lim.cpus:g} cpus, {format_size(lim.memory_bytes)} memory (no swap), {lim.pids} pids, "
            f"{format_duration(lim.iteration_timeout_seconds)} per iteration, "
            f"{lim.max_iterations} iterations"
            + (f", {format_duration(lim.max_time_seconds)} in all" if lim.max_time_seconds else ""),
        ),
        ("sessions at once", f"{p.slots_in_force} ({p.slots_basis})"),
    ]
    for key, value in rows:
        grid.add_row(key, safe(value))  # commands and paths as typed: `pip install -e '.[test]'` is no markup
    for m in p.mounts:
        grid.add_row("mount", safe(f"{m.source} -> {m.target} ({'ro' if m.read_only else 'rw'})"))
    return grid
