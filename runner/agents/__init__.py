"""Agent adapters: how each known agent is started inside the container.

Every adapter reads the iteration's prompt from /harness/prompt.md and reports through
$HARNESS_STATUS_FILE (the prompt tells it how). `--agent-cmd` runs any command with `sh -c`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runner.errors import UsageError
from runner.images import DEFAULT_IMAGE


@dataclass(frozen=True)
class AgentAdapter:
    name: str
    command: tuple[str, ...]
    image: str  # the image it is expected to run in when --image is not given
    description: str
    rate_limit_patterns: tuple[str, ...] = ()  # in its output when the provider says "later"


_PROMPT = '"$(cat /harness/prompt.md)"'

ADAPTERS: dict[str, AgentAdapter] = {
    a.name: a
    for a in (
        AgentAdapter(
            "demo", ("harness-demo-agent",), DEFAULT_IMAGE,
            "offline deterministic agent shipped in the base image (no model)",
        ),
        AgentAdapter(
            "claude-code",
            ("sh", "-c", f"exec claude -p {_PROMPT} --dangerously-skip-permissions --output-format text"),
            "harness-claude-code:latest", "Anthropic's Claude Code CLI",
            (r"usage limit reached", r"rate_limit_error", r"overloaded_error", r"\b429\b"),
        ),
        AgentAdapter(
            "codex", ("sh", "-c", f"exec codex exec --full-auto {_PROMPT}"),
            "harness-codex:latest", "OpenAI's Codex CLI",
            (r"rate limit", r"usage limit", r"\b429\b", r"too many requests"),
        ),
        AgentAdapter(
            "aider", ("sh", "-c", "exec aider --yes-always --no-auto-commits --message-file /harness/prompt.md"),
            "harness-aider:latest", "aider",
            (r"RateLimitError", r"rate limit", r"\b429\b"),
        ),
    )
}  # fmt: skip


def resolve_agent(name: str | None, command: str | None) -> tuple[str, list[str], str]:
    """(adapter name, argv, default image) for `--agent NAME` or `--agent-cmd CMD`."""
    if name and command:
        raise UsageError("give either --agent or --agent-cmd, not both")
    if command is not None:
        if not command.strip():
            raise UsageError("--agent-cmd: the command is empty")
        return "custom", ["sh", "-c", command], DEFAULT_IMAGE
    chosen = name or "demo"
    adapter = ADAPTERS.get(chosen)
    if adapter is None:
        raise UsageError(f"--agent: unknown agent {chosen!r} (known: {', '.join(sorted(ADAPTERS))})")
    return adapter.name, list(adapter.command), adapter.image


# For --agent-cmd: the phrases providers and their SDKs print when they refuse for now.
GENERIC_RATE_LIMIT = (
    r"usage limit reached", r"rate[ _-]?limit(ed|_error| exceeded| reached)", r"too many requests",
    r"\b429\b", r"overloaded_error",
)  # fmt: skip
RATE_LIMIT_TAIL_BYTES = 64 * 1024


def rate_limited(agent: str, log_path: Path) -> bool:
    """True when the end of an iteration's output says the agent's provider is rate limiting it."""
    adapter = ADAPTERS.get(agent)
    patterns = adapter.rate_limit_patterns if adapter and adapter.rate_limit_patterns else GENERIC_RATE_LIMIT
    if agent == "demo":
        return False
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - RATE_LIMIT_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    return any(re.search(p, tail, re.IGNORECASE) for p in patterns)
