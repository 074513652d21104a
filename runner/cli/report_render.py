"""`harness report`'s page: the report model rendered as markdown or as one self-contained HTML file.

Every piece of agent-written text is escaped on the way: it may hold markup, and escape sequences meant
for a terminal.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from runner.base.limits import format_duration
from runner.base.output import neutralise
from runner.cli.render import setup_line
from runner.record.models import CheckResult, Outcome, RunState
from runner.usecases.report import SessionReport

# Everything the agent wrote (summaries, next steps, paths, link targets, check output, notes
# echo the user but are escaped the same) passes through _md() or _h(): escape sequences made visible,
# markup made text.


def _tokens(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _cost(usd: float | None) -> str:
    return "-" if usd is None else f"${usd:.2f}"


def _usage(r: SessionReport) -> str:
    u = r.usage
    if not u.requests and r.max_cost_usd is None:
        return "not counted (no model requests through the gateway)"
    line = f"{u.requests} requests, {_tokens(u.tokens.total)} tokens, {_cost(u.cost_usd)}"
    return line + (f" of {_cost(r.max_cost_usd)}" if r.max_cost_usd is not None else "")


def _protected(chk: CheckResult, escape: Callable[[str], str], shown: int = 20) -> str:
    """The protected paths a check ran with, and those the agent changed (escaped for the page)."""
    changed = [f"{escape(c.path)} ({c.change})" for c in chk.protected_changes[:shown]]
    more = chk.protected_changes_more + max(0, len(chk.protected_changes) - shown)
    return (
        f"It ran with these paths as the base commit has them: {', '.join(escape(p) for p in chk.protected)}. "
        f"The agent changed: {', '.join(changed) or 'none of them'}{f' and {more} more' if more else ''}."
    )


def _check(passed: bool | None) -> str:
    return "-" if passed is None else "passed" if passed else "failed"


def _facts(r: SessionReport) -> list[tuple[str, str]]:
    """(label, value) rows; values hold no agent-written text (the error is the harness's own)."""
    stat = r.diff_stat
    rows = [
        ("state", r.status.value + (f" ({r.stop_reason.value})" if r.stop_reason else "")),
        ("iterations", f"{r.iteration_count} of {r.max_iterations}"),
        ("branch", r.branch if r.head_commit else f"{r.branch} (none: discarded as {r.discarded_ref})"
         if r.discarded_ref else f"{r.branch} (none)"),
        ("base", r.base_commit[:12]),
        ("head", r.head_commit[:12] if r.head_commit else "-"),
        ("commits", "-" if r.commits_ahead is None else str(r.commits_ahead)),
        ("diff", "-" if stat is None else f"{stat.files_changed} file{'s' if stat.files_changed != 1 else ''}, "
         f"+{stat.insertions} -{stat.deletions}"),
        ("setup", setup_line(r.setup) if r.setup else "-"),
        ("model use", _usage(r)),
        ("started", r.created_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("finished", r.finished_at.strftime("%Y-%m-%d %H:%M UTC") if r.finished_at else "-"),
    ]  # fmt: skip
    if r.error:
        rows.append(("error", r.error))
    return rows


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(text: str) -> str:
    """Untrusted text for one markdown line or table cell: escapes visible, no HTML, no markup."""
    shown = html.escape(neutralise(text), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", shown).replace("\n", "<br>")


def _md_block(text: str) -> str:
    """Untrusted multi-line text as an indented code block (it cannot end the block early)."""
    return "\n".join("    " + line for line in neutralise(text).splitlines()) or "    (empty)"


def to_markdown(r: SessionReport) -> str:
    lines = [f"# Session {r.session_id}: {r.status.value}", "", f"**{_md(r.verdict)}**", "", "## Objective", ""]
    lines += [_md_block(r.objective), ""]
    if r.flagged:
        lines += [
            "## Review first: flagged paths",
            "",
            "These changed paths can run code on your machine, or the check ran without them:",
            "",
        ]
        lines += ["| path | why |", "|---|---|"]
        for f in r.flagged:
            why = "; ".join(f.why) + (f"; link to {f.link_target!r}" if f.link_target else "")
            lines.append(f"| {_md(f.path)} | {_md(why)} |")
        lines.append("")
    if r.findings.would_overwrite or r.findings.journal_paths:
        lines += ["## Merge is refused", "", "The branch would replace files git does not track here, "
                  "or write into the harness journal:", ""]  # fmt: skip
        lines += [f"- {_md(p)}" for p in [*r.findings.would_overwrite, *r.findings.journal_paths]] + [""]
    lines += ["## What to do", ""]
    for c in r.commands:
        lines += [f"{_md(c.label)}:", "", "    " + c.command, ""]
    if not r.commands:
        lines += ["Nothing: there is no branch to merge or restore.", ""]
    lines += ["## Facts", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in _facts(r)] + [""]
    lines += ["## Iterations", ""]
    lines += ["| # | outcome | time | commits | tokens | cost | check | summary |", "|---|---|---|---|---|---|---|---|"]
    for it in r.iterations:
        lines.append(
            f"| {it.iteration} | {it.outcome.value} | {format_duration(it.duration_seconds)} | {len(it.commits)} | "
            f"{_tokens(it.tokens)} | {_cost(it.cost_usd)} | {_check(it.check_passed)} | {_md(it.summary)} |"
        )
    lines.append("")
    if r.check_command:
        lines += ["## Check", "", "Command:", "", _md_block(r.check_command), ""]
        chk = r.last_check
        if chk is None:
            lines += ["Not run yet (it runs when the agent reports done).", ""]
        else:
            result = "passed" if chk.passed else "timed out" if chk.timed_out else f"failed (exit {chk.exit_code})"
            lines += [f"Last result: **{result}** in {format_duration(chk.duration_seconds)}", ""]
            if chk.protected:
                lines += [_protected(chk, _md), ""]
            lines += ["Output (tail):", "", _md_block(chk.output_tail), ""]
    if r.notes or r.stop_note:
        lines += ["## Notes given", ""]
        for n in r.notes:
            when = f"delivered in iteration {n.delivered_in_iteration}" if n.delivered_in_iteration else "waiting"
            lines.append(f"- {_md(n.text)} ({when})")
        if r.stop_note:
            lines.append(f"- stop note: {_md(r.stop_note)}")
        lines.append("")
    if r.findings.files:
        lines += [f"## Files changed ({len(r.findings.files)})", ""] + [f"- {_md(p)}" for p in r.findings.files] + [""]
    lines.append(f"Generated {r.generated_at.strftime('%Y-%m-%d %H:%M UTC')} by harness report.")
    return "\n".join(lines) + "\n"


def _h(text: str) -> str:
    """Untrusted text for HTML: escape sequences made visible, then every markup character escaped."""
    return html.escape(neutralise(text), quote=True)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;
color:#1d2125;background:#fff}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.15rem;margin-top:1.8rem;border-bottom:1px solid #ddd}
.verdict{font-size:1.05rem;padding:.5rem .8rem;border-radius:6px;background:#eef2f6;display:inline-block}
.completed{border-left:6px solid #1f883d}.running{border-left:6px solid #0969da}.failed{border-left:6px solid #cf222e}
.attention{border-left:6px solid #bf8700}
.flagged{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.2rem 1rem 1rem}
.refused{background:#ffebe9;border:1px solid #cf222e;border-radius:6px;padding:.2rem 1rem 1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;
vertical-align:top}th{background:#f6f8fa}.num{text-align:right;white-space:nowrap}
pre,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.6rem .8rem;border-radius:6px;white-space:pre-wrap;word-break:break-all}
.objective{white-space:pre-wrap;background:#f6f8fa;padding:.6rem .8rem;border-radius:6px}
.summary{white-space:pre-wrap;word-break:break-word}.dim{color:#656d76}
.o-done{color:#1f883d;font-weight:600}.o-bad{color:#cf222e;font-weight:600}
"""

_BAD = {Outcome.TIMED_OUT, Outcome.OOM_KILLED, Outcome.AGENT_ERROR, Outcome.NO_REPORT, Outcome.DISK_EXCEEDED,
        Outcome.BUDGET, Outcome.CHECK_FAILED, Outcome.INTERRUPTED, Outcome.BLOCKED}  # fmt: skip


def _tone(state: RunState) -> str:
    if state is RunState.COMPLETED:
        return "completed"
    if state in {RunState.RUNNING, RunState.QUEUED}:
        return "running"
    return "failed" if state is RunState.FAILED else "attention"


def to_html(r: SessionReport) -> str:
    """One self-contained page: inline CSS, no script, no network (its CSP forbids both anyway)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>harness report: {_h(r.session_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Session {_h(r.session_id)}: {_h(r.status.value)}</h1>",
        f'<p class="verdict {_tone(r.status)}" id="verdict">{_h(r.verdict)}</p>',
        f'<h2>Objective</h2><div class="objective">{_h(r.objective)}</div>',
    ]
    if r.flagged:
        parts.append('<section class="flagged" id="flagged"><h2>Review first: flagged paths</h2>'
                     "<p>These changed paths can run code on your machine, or the check ran without them.</p>"
                     "<table><tr><th>path</th><th>why</th></tr>")  # fmt: skip
        for f in r.flagged:
            why = "; ".join(f.why) + (f"; link to {f.link_target!r}" if f.link_target else "")
            parts.append(f"<tr><td><code>{_h(f.path)}</code></td><td>{_h(why)}</td></tr>")
        parts.append("</table></section>")
    if r.findings.would_overwrite or r.findings.journal_paths:
        parts.append('<section class="refused" id="refused"><h2>Merge is refused</h2><p>The branch would replace '
                     "files git does not track here, or write into the harness journal:</p><ul>")  # fmt: skip
        parts += [f"<li><code>{_h(p)}</code></li>" for p in [*r.findings.would_overwrite, *r.findings.journal_paths]]
        parts.append("</ul></section>")
    parts.append('<h2>What to do</h2><div id="commands">')
    for c in r.commands:
        parts.append(f"<p>{_h(c.label)}:</p><pre><code>{_h(c.command)}</code></pre>")
    if not r.commands:
        parts.append("<p>Nothing: there is no branch to merge or restore.</p>")
    parts.append('</div><h2>Facts</h2><table id="facts">')
    parts += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _facts(r)]
    parts.append('</table><h2>Iterations</h2><table id="iterations"><tr><th class="num">#</th><th>outcome</th>'
                 '<th class="num">time</th><th class="num">commits</th><th class="num">tokens</th>'
                 '<th class="num">cost</th><th>check</th><th>summary</th></tr>')  # fmt: skip
    for it in r.iterations:
        tone = "o-done" if it.outcome is Outcome.DONE else "o-bad" if it.outcome in _BAD else ""
        commits = ", ".join(c[:8] for c in it.commits) or "-"
        summary = _h(it.summary) + (f'<br><span class="dim">next: {_h(it.next_action)}</span>'
                                    if it.next_action else "")  # fmt: skip
        parts.append(
            f'<tr class="iteration" id="iteration-{it.iteration}"><td class="num">{it.iteration}</td>'
            f'<td class="{tone}">{_h(it.outcome.value)}</td><td class="num">{format_duration(it.duration_seconds)}'
            f'</td><td title="{_h(commits)}" class="num">{len(it.commits)}</td><td class="num">{_tokens(it.tokens)}'
            f'</td><td class="num">{_cost(it.cost_usd)}</td><td>{_check(it.check_passed)}</td>'
            f'<td class="summary">{summary}</td></tr>'
        )
    parts.append("</table>")
    if r.check_command:
        parts.append(f'<h2>Check</h2><div id="check"><p>Command: <code>{_h(r.check_command)}</code></p>')
        chk = r.last_check
        if chk is None:
            parts.append("<p>Not run yet (it runs when the agent reports done).</p>")
        else:
            result = "passed" if chk.passed else "timed out" if chk.timed_out else f"failed (exit {chk.exit_code})"
            parts.append(f"<p>Last result: <strong>{_h(result)}</strong> in {format_duration(chk.duration_seconds)}"
                         "</p>" + (f"<p>{_protected(chk, _h)}</p>" if chk.protected else "")
                         + f"<pre>{_h(chk.output_tail) or '(no output)'}</pre>")  # fmt: skip
        parts.append("</div>")
    if r.notes or r.stop_note:
        parts.append('<h2>Notes given</h2><ul id="notes">')
        for n in r.notes:
            when = f"delivered in iteration {n.delivered_in_iteration}" if n.delivered_in_iteration else "waiting"
            parts.append(f'<li><span class="summary">{_h(n.text)}</span> <span class="dim">({when})</span></li>')
        if r.stop_note:
            parts.append(f'<li>stop note: <span class="summary">{_h(r.stop_note)}</span></li>')
        parts.append("</ul>")
    if r.findings.files:
        parts.append(f"<h2>Files changed ({len(r.findings.files)})</h2><ul>")
        parts += [f"<li><code>{_h(p)}</code></li>" for p in r.findings.files]
        parts.append("</ul>")
    parts.append(f'<p class="dim">Generated {r.generated_at.strftime("%Y-%m-%d %H:%M UTC")} by harness report.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
