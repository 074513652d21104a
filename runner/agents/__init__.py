"""Agent adapters: how each known agent is started inside the container.

Every adapter reads the iteration's prompt from /harness/prompt.md and reports through
$HARNESS_STATUS_FILE (the prompt tells it how). `--agent-cmd` runs any command with `sh -c`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.errors import UsageError
from runner.images import DEFAULT_IMAGE


@dataclass(frozen=True)
class AgentAdapter:
    name: str
    command: tuple[str, ...]
    image: str  # the image it is expected to run in when --image is not given
    description: str


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
        ),
        AgentAdapter(
            "codex", ("sh", "-c", f"exec codex exec --full-auto {_PROMPT}"),
            "harness-codex:latest", "OpenAI's Codex CLI",
        ),
        AgentAdapter(
            "aider", ("sh", "-c", "exec aider --yes-always --no-auto-commits --message-file /harness/prompt.md"),
            "harness-aider:latest", "aider",
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
