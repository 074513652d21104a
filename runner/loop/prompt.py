"""The prompt handed to the agent at each iteration (/harness/prompt.md)."""

from __future__ import annotations

from runner.base.layout import STATUS_FILE, WORKSPACE
from runner.record.models import IterationRecord, Note

HISTORY_SHOWN = 20


def build_prompt(
    *,
    objective: str,
    session: str,
    iteration: int,
    max_iterations: int,
    branch: str,
    history: list[IterationRecord],
    notes: list[Note],
    check: str | None = None,
    protected: list[str] | None = None,
) -> str:
    parts = [
        "# Objective",
        "",
        objective.strip(),
        "",
        "# Where you are",
        "",
        f"This is iteration {iteration} of {max_iterations} of the unattended harness session `{session}`.",
        f"Your working directory {WORKSPACE} is your own copy of the repository, on branch `{branch}`.",
        "Commit your work as you go; anything left uncommitted is committed for you when the iteration ends.",
        "There is no network. Nothing outside this copy persists between iterations.",
        "",
        "# Previous iterations",
        "",
    ]
    shown = history[-HISTORY_SHOWN:]
    if not shown:
        parts.append("None: this is the first iteration.")
    if len(history) > len(shown):
        parts.append(f"({len(history) - len(shown)} earlier iterations not shown)")
    for rec in shown:
        line = f"- Iteration {rec.iteration}: {rec.outcome.value}"
        if rec.summary:
            line += f". {rec.summary.strip()}"
        if rec.next_action:
            line += f" Next: {rec.next_action.strip()}"
        parts.append(line)
    last = history[-1] if history else None
    if last is not None and last.check is not None and not last.check.passed:
        how = "timed out" if last.check.timed_out else f"exited with {last.check.exit_code}"
        parts += [
            "",
            "# The check failed",
            "",
            f"You reported done, but the check `{last.check.command}` {how}. The objective is met only when it "
            "passes. The end of its output:",
            "",
            *[f"    {line}" for line in last.check.output_tail.splitlines()],
        ]
    if notes:
        parts += ["", "# Notes from the user (new since the last iteration)", ""]
        parts += [f"- {note.text.strip()}" for note in notes]
    parts += [
        "",
        "# How to report",
        "",
        f"Before you exit, write one JSON object to the file named by $HARNESS_STATUS_FILE ({STATUS_FILE}):",
        "",
        '    {"state": "working" | "done" | "blocked", "summary": "what you did", "next": "what comes next"}',
        "",
        '- "working": you made progress and another iteration should continue.',
        '- "done": the objective is fully met' + (f" and `{check}` passes." if check else "."),
        '- "blocked": you cannot go on without a human; say why in "summary".',
        "",
    ]
    if check and protected:
        parts += [
            "The check runs with these paths as the base commit has them, whatever you change there (your changes "
            "to them are kept on the branch for the user to review, but the check does not see them): "
            + ", ".join(f"`{p}`" for p in protected),
            "",
        ]
    return "\n".join(parts)
