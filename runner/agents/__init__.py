"""Agent adapters: how each known agent is started inside the container and how its output is read.

Every adapter reads the iteration's prompt from /harness/prompt.md and reports through
$HARNESS_STATUS_FILE (the prompt tells it how). `--agent-cmd` runs any command with `sh -c` and gets
the same SDK environment (gateway base URLs, placeholder keys). Rate limits are known from structured
facts only: the gateway's, then `agent_report(...).rate_limited` from the agent's own events.

The layer may import `runner.sandbox`, `runner.backends`, `runner.record` and `runner.base`; never `runner.gateway`
(the two sit side by side).
"""

from __future__ import annotations

from pathlib import Path

from runner.agents.aider import Aider
from runner.agents.base import (
    PLACEHOLDER_KEY,
    AgentAdapter,
    AgentOptions,
    Endpoints,
    default_endpoints,
    sdk_env,
)
from runner.agents.claude_code import ClaudeCode
from runner.agents.codex import Codex
from runner.agents.demo import Demo
from runner.base.errors import UsageError
from runner.record.models import AgentInfo, AgentReport
from runner.sandbox.images import DEFAULT_IMAGE

__all__ = [
    "ADAPTERS",
    "PLACEHOLDER_KEY",
    "AgentAdapter",
    "AgentOptions",
    "Endpoints",
    "agent_env",
    "agent_report",
    "default_endpoints",
    "rate_limited",
    "resolve_agent",
    "sdk_env",
]

CUSTOM = "custom"
ADAPTERS: dict[str, AgentAdapter] = {a.name: a for a in (Demo(), ClaudeCode(), Codex(), Aider())}


def resolve_agent(
    name: str | None,
    command: str | None,
    options: AgentOptions | None = None,
    endpoints: Endpoints | None = None,
) -> tuple[str, list[str], str]:
    """(adapter name, argv, default image) for `--agent NAME` or `--agent-cmd CMD`."""
    if name and command:
        raise UsageError("give either --agent or --agent-cmd, not both")
    if command is not None:
        if not command.strip():
            raise UsageError("--agent-cmd: the command is empty")
        return CUSTOM, ["sh", "-c", command], DEFAULT_IMAGE
    chosen = name or "demo"
    adapter = ADAPTERS.get(chosen)
    if adapter is None:
        raise UsageError(f"--agent: unknown agent {chosen!r} (known: {', '.join(sorted(ADAPTERS))})")
    argv = adapter.command(options or AgentOptions(), endpoints or default_endpoints())
    return adapter.name, argv, adapter.image


def agent_env(agent: AgentInfo, endpoints: Endpoints | None = None) -> dict[str, str]:
    """The agent's non-secret environment; `--agent-cmd` (and any unknown name) gets the SDK environment."""
    ends = endpoints or default_endpoints()
    adapter = ADAPTERS.get(agent.name)
    if adapter is None:
        return sdk_env(ends)
    return adapter.env(AgentOptions(model=agent.model, max_turns=agent.max_turns), ends)


def agent_report(agent_name: str, log_path: Path) -> AgentReport | None:
    """What the agent's structured output says about the iteration (None for custom and demo)."""
    adapter = ADAPTERS.get(agent_name)
    return adapter.parse_output(log_path) if adapter is not None else None


def rate_limited(agent_name: str, log_path: Path) -> bool:
    """Kept for callers not yet moved to `agent_report`: structured facts only, never free text."""
    report = agent_report(agent_name, log_path)
    return report is not None and report.rate_limited
