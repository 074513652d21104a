"""`harness report --all`'s page: every session of the machine as markdown or as one self-contained HTML file.

The HTML page has no script and fetches nothing (its CSP forbids both): each session's chart is inline SVG
(bars of cost per iteration, coloured by outcome), each file's diff a collapsed <details> with its lines
coloured by CSS classes. Everything the agent wrote (paths, patches, summaries) is escaped on the way, as in
the report of one session (runner/cli/report_render.py), whose escaping, numbers and style this page shares.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from runner.base.limits import format_duration
from runner.base.output import neutralise
from runner.base.paths import repo_key
from runner.cli.report_render import _BAD, _CSS, _cost, _h, _md, _md_block, _tokens, _tone
from runner.record.models import Outcome, RunState
from runner.usecases.morning import DiffFile, MorningRace, MorningRepo, MorningReport, MorningSession

_STATE_ORDER = [s.value for s in RunState]


def _since(r: MorningReport) -> str:
    of = f" of {r.repo} (--repo)" if r.repo else ""
    if r.since is None:
        return f"Every session{of or ' of this machine'}, whatever its age."
    return f"The sessions{of} last active since {r.since.strftime('%Y-%m-%d %H:%M UTC')}."


def _title(r: MorningReport) -> str:
    return f"Sessions of {r.repo}" if r.repo else "Sessions on this machine"


def _empty(r: MorningReport) -> str:
    where = "in this repository" if r.repo else "on this machine"
    return f"No session to show: none has run {where}{' since then' if r.since else ''}."


def _totals(r: MorningReport) -> str:
    t = r.totals
    repos = len([repo for repo in r.repositories if not repo.missing])
    states = ", ".join(f"{t.by_state[s]} {s}" for s in _STATE_ORDER if s in t.by_state)
    line = f"{t.sessions} session{'s' if t.sessions != 1 else ''} in {repos} repositor{'ies' if repos != 1 else 'y'}"
    line += f" ({states})" if states else ""
    line += f"; {t.iterations} iteration{'s' if t.iterations != 1 else ''}"
    counted = any(s.tokens is not None or s.cost_usd is not None for repo in r.repositories for s in repo.sessions)
    line += f", {_tokens(t.tokens)} tokens, {_cost(t.cost_usd)}" if counted else ", model use not counted"
    if t.flagged_sessions:
        line += f"; {t.flagged_sessions} with flagged paths to review"
    if t.problems:
        line += f"; {t.problems} that could not be read"
    if t.missing_repos:
        line += f"; {t.missing_repos} repositor{'ies' if t.missing_repos != 1 else 'y'} missing"
    return line


def _check_result(s: MorningSession) -> str:
    chk = s.last_check
    if s.check_command is None:
        return "-"
    if chk is None:
        return "not run"
    return "passed" if chk.passed else "timed out" if chk.timed_out else f"failed (exit {chk.exit_code})"


def _row(s: MorningSession) -> list[str]:
    """The overview's cells: states and numbers only, nothing the agent wrote."""
    return [s.status.value, f"{s.iteration_count} of {s.max_iterations}", format_duration(s.agent_seconds),
            _tokens(s.tokens), _cost(s.cost_usd), _check_result(s), str(len(s.flagged))]  # fmt: skip


_HEADS = ["state", "iterations", "agent time", "tokens", "cost", "check", "flagged"]


def groups(repo: MorningRepo) -> list[tuple[MorningRace | None, list[MorningSession]]]:
    """The repository's sessions in the page's order, each race's racers together under it (in the order
    they started), where its most recently active racer would be."""
    by_id = {s.session_id: s for s in repo.sessions}
    races = {race.session_id: race for race in repo.races}
    found: list[tuple[MorningRace | None, list[MorningSession]]] = []
    for s in repo.sessions:
        race = races.pop(s.race, None) if s.race else None
        if race is not None:
            found.append((race, [by_id[x] for x in race.racers if x in by_id]))
        elif s.race is None or s.race not in {r.session_id for r in repo.races}:
            found.append((None, [s]))
    return found


def _race_line(race: MorningRace) -> str:
    won = ", ".join(race.winners) or "none"
    end = f"; ended: {race.end_reason}" if race.end_reason else ""
    return f"race of {len(race.racers)} racers, judged by its check; winners: {won}{end}"


def _anchor(s: MorningSession) -> str:
    return f"s-{repo_key(Path(s.repo))}-{s.session_id}"  # session ids are strict names: safe in an id


# ---- markdown


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`: the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _inline(text: str) -> str:
    """Untrusted text inside an HTML tag of the markdown page (a <summary>): one line, markup escaped."""
    return html.escape(neutralise(text).replace("\n", "\\n").replace("\r", "\\r"), quote=True)


_BARS = " ▁▂▃▄▅▆▇█"


def _spark(s: MorningSession) -> str:
    """Cost per iteration as block characters, each iteration's outcome under it."""
    costs = [it.cost_usd for it in s.iterations]
    top = max((c for c in costs if c is not None), default=None)
    bars = "".join(_BARS[round((c or 0) / top * 8)] for c in costs) if top else "not counted"
    outcomes = " · ".join(f"{it.iteration} {it.outcome.value}" for it in s.iterations[-20:])
    more = "… " if len(s.iterations) > 20 else ""
    return f"cost per iteration: `{bars}`; outcomes: {more}{outcomes or '-'}"


def _md_file(f: DiffFile, s: MorningSession) -> list[str]:
    counts = "binary" if f.insertions is None else f"+{f.insertions} -{f.deletions}"
    flag = f" ⚠ flagged: {html.escape('; '.join(f.why))}" if f.flagged else ""
    lines = [f"<details><summary><code>{_inline(f.path)}</code> {counts}{flag}</summary>", ""]
    if f.patch:
        patch = neutralise(f.patch)
        fence = _fence(patch)
        lines += [fence + "diff", *patch.rstrip("\n").splitlines(), fence, ""]
    if f.truncated:
        lines += [f"truncated: the whole diff is `harness diff --session {s.session_id} --repo {s.repo}`", ""]
    return [*lines, "</details>", ""]


def _md_session(s: MorningSession) -> list[str]:
    lines = [f"### {s.session_id}: {s.status.value}", "", f"**{_md(s.verdict)}**", ""]
    lines += ["Objective:", "", _md_block(s.objective[:600] + ("…" if len(s.objective) > 600 else "")), ""]
    lines += ["| " + " | ".join(_HEADS) + " |", "|" + "---|" * len(_HEADS)]
    lines += ["| " + " | ".join(_row(s)) + " |", "", _spark(s), ""]
    if s.error:
        lines += [f"Error: {_md(s.error)}", ""]
    if s.flagged:
        lines += ["Review first, flagged paths:", ""]
        lines += [f"- {_md(f.path)}: {_md('; '.join(f.why))}" for f in s.flagged] + [""]
    if s.diff is not None and s.diff.files:
        stat = s.diff_stat
        size = f" ({stat.files_changed} files, +{stat.insertions} -{stat.deletions})" if stat else ""
        lines += [f"#### Diff{size}", ""]
        for f in s.diff.files:
            lines += _md_file(f, s)
        if s.diff.omitted_files:
            lines += [f"{s.diff.omitted_files} more files not shown.", ""]
    for c in s.commands:
        lines += [f"{_md(c.label)}:", "", "    " + c.command, ""]
    return lines


def _md_repo(repo: MorningRepo) -> list[str]:
    lines = [f"## {_md(repo.repo)}", ""]
    if repo.missing:
        lines += [f"**Missing:** {_md(repo.missing)}", ""]
    for p in repo.problems:
        lines += [f"- **{_md(p.session_id)}: cannot be read:** {_md(p.error)}"]
    if repo.problems:
        lines.append("")
    for race, sessions in groups(repo):
        if race is not None:
            lines += [f"### race {race.session_id}: {race.state}", "", f"**{_md(_race_line(race))}**", ""]
            lines += ["Check:", "", _md_block(race.check_command), ""]
        for s in sessions:
            lines += _md_session(s)
    return lines


def render(r: MorningReport, fmt: str) -> str:
    """The page as markdown, HTML or JSON (the model itself)."""
    if fmt == "json":
        return r.model_dump_json(by_alias=True, indent=2) + "\n"
    return to_html(r) if fmt == "html" else to_markdown(r)


def to_markdown(r: MorningReport) -> str:
    lines = [f"# {_md(_title(r))}", "", f"{_totals(r)}.", "", _md(_since(r)), ""]
    sessions = [s for repo in r.repositories for s in repo.sessions]
    if not sessions and not any(repo.problems or repo.missing for repo in r.repositories):
        lines += [_empty(r), ""]
    if sessions:
        lines += ["| repository | session | " + " | ".join(_HEADS) + " |", "|---|---|" + "---|" * len(_HEADS)]
        for s in sessions:
            lines.append(f"| {_md(s.repo)} | {s.session_id} | " + " | ".join(_row(s)) + " |")
        lines.append("")
    for repo in r.repositories:
        lines += _md_repo(repo)
    lines.append(f"Generated {r.generated_at.strftime('%Y-%m-%d %H:%M UTC')} by harness report --all.")
    return "\n".join(lines) + "\n"


# ---- HTML

_MORE_CSS = """
.repo{margin-top:2.2rem}.session{margin:1.2rem 0;padding:.2rem 1rem 1rem;border:1px solid #d0d7de;border-radius:8px}
.session h3{margin:.6rem 0 .4rem}.missing{background:#ffebe9;border:1px solid #cf222e;border-radius:6px;padding:.5rem}
.chart{display:block;margin:.6rem 0}.file{margin:.25rem 0;border:1px solid #eaeef2;border-radius:6px}
.file>summary{cursor:pointer;padding:.3rem .6rem;background:#f6f8fa;font-size:.92em}
.file.flagged-file>summary{background:#fff8c5}.flag{color:#9a6700;font-weight:600}
pre.diff{margin:0;border-radius:0 0 6px 6px;white-space:pre;overflow-x:auto;word-break:normal;line-height:1.35}
pre.diff .add{background:#dafbe1;color:#116329}pre.diff .del{background:#ffebe9;color:#a40e26}
pre.diff .hunk{color:#8250df}pre.diff .meta{color:#656d76;font-weight:600}
.n-add{color:#1a7f37}.n-del{color:#cf222e}.truncated{color:#9a6700;font-style:italic;margin:.3rem .6rem}
.problems li{color:#a40e26}.race{border-left:4px solid #8250df;padding-left:.8rem;margin:1.2rem 0}
"""

_FILL = {"done": "#1f883d", "bad": "#cf222e", "working": "#0969da", "other": "#8c959f"}


def _kind(outcome: Outcome) -> str:
    if outcome is Outcome.DONE:
        return "done"
    if outcome in _BAD:
        return "bad"
    return "working" if outcome is Outcome.WORKING else "other"


CHART_WIDTH, CHART_HEIGHT = 360, 56


def chart(s: MorningSession) -> str:
    """Inline SVG: a bar per iteration, its height the iteration's cost, its colour the outcome."""
    its = s.iterations
    costs = [it.cost_usd for it in its]
    top = max((c for c in costs if c is not None), default=None)
    label = f"cost per iteration, highest {_cost(top)}" if top else "cost not counted: bars show each outcome"
    n = max(1, len(its))
    step = min(24.0, CHART_WIDTH / n)
    bar_w, base = max(1.0, step * 0.8), CHART_HEIGHT - 14
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
             f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{_h(label)}">',
             f'<line x1="0" y1="{base}" x2="{CHART_WIDTH}" y2="{base}" stroke="#d0d7de"/>']  # fmt: skip
    for i, it in enumerate(its):
        height = 4 + (base - 6) * (it.cost_usd or 0) / top if top else base * 0.5
        kind = _kind(it.outcome)
        parts.append(
            f'<rect class="bar {kind}" data-outcome="{_h(it.outcome.value)}" x="{i * step:.1f}" '
            f'y="{base - height:.1f}" width="{bar_w:.1f}" height="{height:.1f}" fill="{_FILL[kind]}">'
            f"<title>iteration {it.iteration}: {_h(it.outcome.value)}, {_cost(it.cost_usd)}, "
            f"{format_duration(it.duration_seconds)}</title></rect>"
        )
    parts.append(f'<text x="0" y="{CHART_HEIGHT - 2}" font-size="11" fill="#656d76">{_h(label)}</text></svg>')
    return "".join(parts)


def _diff_lines(patch: str) -> str:
    """A patch's lines, each coloured by its kind through a CSS class; every character escaped."""
    out, header = [], True
    for line in neutralise(patch).splitlines():
        if line.startswith("diff --git "):
            header = True
        elif line.startswith("@@"):
            header = False
            out.append(f'<span class="hunk">{_h(line)}</span>')
            continue
        kind = "meta" if header else "add" if line[:1] == "+" else "del" if line[:1] == "-" else ""
        out.append(f'<span class="{kind}">{_h(line)}</span>' if kind else _h(line))
    return "\n".join(out)


def _html_file(f: DiffFile, s: MorningSession) -> str:
    counts = ('<span class="dim">binary</span>' if f.insertions is None else
              f'<span class="n-add">+{f.insertions}</span> <span class="n-del">-{f.deletions}</span>')  # fmt: skip
    flag = f' <span class="flag">flagged: {_h("; ".join(f.why))}</span>' if f.flagged else ""
    part = [f'<details class="file{" flagged-file" if f.flagged else ""}" data-path="{_h(f.path)}">'
            f"<summary><code>{_h(f.path)}</code> {counts}{flag}</summary>"]  # fmt: skip
    if f.patch:
        part.append(f'<pre class="diff">{_diff_lines(f.patch)}</pre>')
    if f.truncated:
        why = "cut at the page's size cap" if f.patch else "not shown: the page's size cap for this session is reached"
        part.append(f'<p class="truncated">truncated ({why}); the whole diff: '
                    f"<code>harness diff --session {_h(s.session_id)} --repo {_h(s.repo)}</code></p>")  # fmt: skip
    return "".join(part) + "</details>"


def _html_session(s: MorningSession) -> list[str]:
    tone = _tone(s.status)
    objective = s.objective[:600] + ("…" if len(s.objective) > 600 else "")
    parts = [f'<article class="session {tone}" id="{_anchor(s)}" data-session="{_h(s.session_id)}" '
             f'data-status="{_h(s.status.value)}"><h3>{_h(s.session_id)}: {_h(s.status.value)}</h3>',
             f'<p class="verdict {tone}">{_h(s.verdict)}</p>', f'<div class="objective">{_h(objective)}</div>',
             "<table class=\"facts\"><tr>" + "".join(f"<th>{h}</th>" for h in _HEADS) + "</tr><tr>"
             + "".join(f"<td>{_h(c)}</td>" for c in _row(s)) + "</tr></table>", chart(s)]  # fmt: skip
    last = s.iterations[-1] if s.iterations else None
    if last is not None and last.summary:
        said = _h(last.summary)
        parts.append(f'<p>Last summary (iteration {last.iteration}): <span class="summary">{said}</span></p>')
    if s.error:
        parts.append(f"<p><strong>Error:</strong> {_h(s.error)}</p>")
    if s.flagged:
        parts.append('<div class="flagged"><p><strong>Review first: flagged paths</strong> (they can run code on '
                     "your machine)</p><ul>")  # fmt: skip
        parts += [f"<li><code>{_h(f.path)}</code>: {_h('; '.join(f.why))}</li>" for f in s.flagged]
        parts.append("</ul></div>")
    if s.diff is not None and s.diff.files:
        stat = s.diff_stat
        size = f" ({stat.files_changed} files, +{stat.insertions} -{stat.deletions})" if stat else ""
        parts.append(f'<h4>Diff{size}</h4><div class="diffs">')
        parts += [_html_file(f, s) for f in s.diff.files]
        if s.diff.omitted_files:
            parts.append(f'<p class="truncated">{s.diff.omitted_files} more files not shown.</p>')
        parts.append("</div>")
    if s.commands:
        parts.append("<h4>What to do</h4>")
        parts += [f"<p>{_h(c.label)}:</p><pre><code>{_h(c.command)}</code></pre>" for c in s.commands]
    return [*parts, "</article>"]


def to_html(r: MorningReport) -> str:
    """One self-contained page: inline CSS and SVG, no script, no network (its CSP forbids both anyway)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>harness: {_h(_title(r)[0].lower() + _title(r)[1:])}</title>",
        f"<style>{_CSS}{_MORE_CSS}</style></head><body>",
        f"<h1>{_h(_title(r))}</h1>",
        f'<p class="verdict" id="totals">{_h(_totals(r))}</p>',
        f'<p class="dim" id="since">{_h(_since(r))}</p>',
    ]
    sessions = [s for repo in r.repositories for s in repo.sessions]
    if not sessions and not any(repo.problems or repo.missing for repo in r.repositories):
        parts.append(f'<p id="empty">{_h(_empty(r))}</p>')
    if sessions:
        parts.append('<table id="overview"><tr><th>repository</th><th>session</th>'
                     + "".join(f"<th>{h}</th>" for h in _HEADS) + "</tr>")  # fmt: skip
        for s in sessions:
            link = f'<a href="#{_anchor(s)}">{_h(s.session_id)}</a>' + (
                f' <span class="dim">(race {_h(s.race)})</span>' if s.race else ""
            )
            parts.append(f"<tr><td><code>{_h(s.repo)}</code></td><td>{link}</td>"
                         + "".join(f"<td>{_h(c)}</td>" for c in _row(s)) + "</tr>")  # fmt: skip
        parts.append("</table>")
    for repo in r.repositories:
        parts.append(f'<section class="repo" data-repo="{_h(repo.repo)}"><h2><code>{_h(repo.repo)}</code></h2>')
        if repo.missing:
            parts.append(f'<p class="missing">Missing: {_h(repo.missing)}</p>')
        if repo.problems:
            parts.append('<ul class="problems">')
            parts += [f'<li data-session="{_h(p.session_id)}"><strong>{_h(p.session_id)}</strong>: cannot be read: '
                      f"{_h(p.error)}</li>" for p in repo.problems]  # fmt: skip
            parts.append("</ul>")
        for race, members in groups(repo):
            if race is not None:
                parts.append(f'<section class="race" data-race="{_h(race.session_id)}"><h3>race '
                             f"{_h(race.session_id)}: {_h(race.state)}</h3>"
                             f'<p class="verdict">{_h(_race_line(race))}</p>'
                             f"<p>Check: <code>{_h(race.check_command)}</code></p>")  # fmt: skip
            for s in members:
                parts += _html_session(s)
            if race is not None:
                parts.append("</section>")
        parts.append("</section>")
    when = r.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="dim">Generated {when} by harness report --all.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
