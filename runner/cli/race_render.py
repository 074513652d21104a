"""A race on one page: its racers side by side, for `status` (rich text), and `report` (markdown, or one
self-contained HTML page under the same CSP as a session's report); and `race --dry-run`'s plans.

Racers' verdicts and paths can hold agent-chosen text (paths): they pass through _md() / _h() / safe().
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runner.base.errors import ExitCode
from runner.base.limits import format_duration
from runner.base.output import neutralise
from runner.cli import render
from runner.cli.render import STATE_STYLE, print_json, safe
from runner.cli.report_render import _CSS, _cost, _h, _md, _md_block, _tokens
from runner.usecases.race_status import RacerRow, RaceStatus

if TYPE_CHECKING:
    from rich.console import Group

    from runner.usecases.race import RacePlan

COLUMNS = ("racer", "agent", "model", "outcome", "iterations", "time", "tokens", "cost", "diff", "protected",
           "flagged", "check")  # fmt: skip


def _outcome(r: RacerRow) -> str:
    if r.status is None:
        return "discarded"
    text = r.status.value + (f" ({r.stop_reason.value})" if r.stop_reason else "")
    return text + (", stopped by the race" if r.stopped_by_race else "")


def _cells(r: RacerRow) -> list[str]:
    diff = "-" if r.files_changed is None else f"{r.files_changed} files, +{r.insertions} -{r.deletions}"
    check = "-" if r.check_passed is None else "passed" if r.check_passed else "failed"
    return [
        r.session_id + (" (winner)" if r.winner else ""), r.agent, r.model or "-", _outcome(r), str(r.iterations),
        "-" if r.seconds is None else format_duration(r.seconds), _tokens(r.tokens), _cost(r.cost_usd), diff,
        ", ".join(r.protected) or "-", ", ".join(r.flagged) or "-", check,
    ]  # fmt: skip


def _facts(st: RaceStatus) -> list[tuple[str, str]]:
    budget = "none" if st.max_cost_usd is None else f"{_cost(st.max_cost_usd)} {st.budget}"
    return [
        ("state", st.state + (f" ({st.end_reason})" if st.end_reason else "")),
        ("winner", ", ".join(st.winners) or "none"),
        ("judge", st.judge + (", --first" if st.first else "")),
        ("check", st.check_command),
        ("budget", budget),
        ("spent", _cost(st.cost_usd)),
    ]


def status(st: RaceStatus, as_json: bool) -> int:
    """`status --session S` of a race: the race's facts, then one line per racer."""
    from rich.table import Table
    from rich.text import Text

    if as_json:
        print_json(st)
        return st.exit_code
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("race", st.session_id)
    grid.add_row("verdict", st.verdict.partition("  ")[2])
    for label, value in _facts(st):
        grid.add_row(label, safe(value))
    render.out.print(grid)
    table = Table(*COLUMNS, box=None, pad_edge=False)
    for r in st.racers:
        style = STATE_STYLE[r.status] if r.status is not None else "dim"
        cells = [safe(c) for c in _cells(r)]
        cells[3] = Text(_outcome(r), style=style)
        table.add_row(*cells)
    render.out.print(table)
    return st.exit_code


HUD_COLUMNS = ("RACER", "AGENT", "STATUS", "ITERATIONS", "TIME", "COST", "CHECK", "PROTECTED", "FLAGGED")


def hud(st: RaceStatus) -> Group:
    """`hud --session S` of a race, one frame: the race's facts, then one row per racer (agent-chosen text, the
    paths, neutralised)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("race", f"{st.session_id}  [dim]{st.repo}[/dim]")
    for label, value in _facts(st):
        grid.add_row(label, safe(value))
    end = st.finished_at or st.generated_at
    grid.add_row("time", f"{format_duration(max(0.0, (end - st.created_at).total_seconds()))} elapsed")
    table = Table(box=None, pad_edge=False, expand=True)
    for col in HUD_COLUMNS:  # on a narrow terminal the numbers stay whole; the agent, status and paths fold
        folds = col in ("AGENT", "STATUS", "PROTECTED", "FLAGGED")
        table.add_column(col, overflow="fold", no_wrap=not folds, min_width=9 if col == "STATUS" else None)
    for r in st.racers:
        style = STATE_STYLE[r.status] if r.status is not None else "dim"
        check = "-" if r.check_passed is None else "passed" if r.check_passed else "failed"
        iterations = str(r.iterations) + (f" of {r.max_iterations}" if r.max_iterations is not None else "")
        table.add_row(
            Text(r.session_id + (" (winner)" if r.winner else ""), style="bold green" if r.winner else ""),
            safe(r.agent + (f" ({r.model})" if r.model else "")), Text(_outcome(r), style=style), iterations,
            "-" if r.seconds is None else format_duration(r.seconds), _cost(r.cost_usd),
            Text(check, style="" if r.check_passed is None else "green" if r.check_passed else "red"),
            Text(neutralise(", ".join(r.protected)) or "-", style="bold red" if r.protected else ""),
            Text(neutralise(", ".join(r.flagged)) or "-", style="bold yellow" if r.flagged else ""),
        )  # fmt: skip
    return Group(Panel(grid, title="harness hud: race", title_align="left"), table)


def to_markdown(st: RaceStatus) -> str:
    lines = [f"# Race {_md(st.session_id)}: {st.state}", "", f"**{_md(st.verdict)}**", ""]
    lines += ["## Objective", "", _md_block(st.objective), ""]
    lines += ["## Racers", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in st.racers]
    lines += ["", "## Facts", ""] + [f"- {k}: {_md(v)}" for k, v in _facts(st)]
    lines += ["", "## What to do", ""]
    for c in st.commands:
        lines += [f"{_md(c.label)}:", "", "```sh", c.command, "```", ""]
    lines.append(f"Generated {st.generated_at.strftime('%Y-%m-%d %H:%M UTC')} by harness report.")
    return "\n".join(lines) + "\n"


def to_html(st: RaceStatus) -> str:
    """One self-contained page: inline CSS, no script, no network (its CSP forbids both)."""
    tone = "completed" if st.winners else "running" if st.state == "running" else "attention"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>harness report: race {_h(st.session_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Race {_h(st.session_id)}: {_h(st.state)}</h1>",
        f'<p class="verdict {tone}" id="verdict">{_h(st.verdict)}</p>',
        f'<h2>Objective</h2><div class="objective">{_h(st.objective)}</div>',
        '<h2>Racers</h2><table id="racers"><tr>' + "".join(f"<th>{_h(c)}</th>" for c in COLUMNS) + "</tr>",
    ]
    for r in st.racers:
        parts.append(f'<tr class="racer" id="racer-{_h(r.session_id)}">'
                     + "".join(f"<td>{_h(c)}</td>" for c in _cells(r)) + "</tr>")  # fmt: skip
    parts.append('</table><h2>Facts</h2><table id="facts">')
    parts += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _facts(st)]
    parts.append('</table><h2>What to do</h2><div id="commands">')
    parts += [f"<p>{_h(c.label)}:</p><pre><code>{_h(c.command)}</code></pre>" for c in st.commands]
    parts.append(f'</div><p class="dim">Generated {st.generated_at.strftime("%Y-%m-%d %H:%M UTC")} by harness '
                 "report.</p></body></html>")  # fmt: skip
    return "\n".join(parts) + "\n"


def report(st: RaceStatus, fmt: str, output: Path | None) -> int:
    """`report --session S` of a race: markdown, HTML or JSON; on stdout, or atomically into a file."""
    from runner.cli.pages import write_page

    if fmt == "json":
        text = st.model_dump_json(by_alias=True, indent=2) + "\n"
    else:
        text = to_html(st) if fmt == "html" else to_markdown(st)
    return write_page(text, output)


def plan(p: RacePlan, as_json: bool) -> int:
    """`race --dry-run`: the race, then each racer's plan as `run --dry-run` shows it."""
    race, cap = p.request, p.request.base.limits.max_cost
    if as_json:
        print_json({
            "sessionId": race.base.session, "repo": str(p.repo), "judge": race.judge, "first": race.first,
            "budget": race.budget, "maxCostUsd": cap,
            "notify": p.notify.model_dump(mode="json", by_alias=True) if p.notify else None,
            "racers": [r.model_dump(mode="json", by_alias=True) for r in p.racers],
        })  # fmt: skip
        return ExitCode.OK
    from rich.rule import Rule
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    seeds = {r.seed for r in p.racers}
    facts = [
        ("race", race.base.session), ("racers", ", ".join(r.session for r in p.racers)),
        ("judge", race.judge + (", --first" if race.first else "")),
        ("budget", "none" if cap is None else f"{_cost(cap)} {race.budget}"),
        ("copies", "a full clone each" if seeds == {None} else f"made from the shared seed {seeds.pop()}"),
    ]  # fmt: skip
    for label, value in facts:
        grid.add_row(label, safe(value))
    render.out.print(grid)
    for racer in p.racers:
        render.out.print(Rule(f"racer {racer.session}", align="left"))
        render.out.print(render.plan_grid(racer))
    render.out.print("[dim]dry run: nothing was created[/dim]")
    return ExitCode.OK
