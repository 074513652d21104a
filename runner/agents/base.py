"""The adapter contract, the SDK environment every agent gets, and a defensive reader of agent logs."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.base.layout import GATEWAY_PORT, PROMPT_DIR
from runner.record.models import AgentReport

PROMPT_FILE = f"{PROMPT_DIR}/prompt.md"
# A placeholder the SDKs accept as a key; the gateway swaps it for the real one on the host.
PLACEHOLDER_KEY = "sk-harness-placeholder-not-a-key"
# Logs are untrusted, capped and may be cut anywhere: read only their end, and bound each line.
REPORT_TAIL_BYTES = 512 * 1024
MAX_EVENT_LINE = 256 * 1024


@dataclass(frozen=True)
class AgentOptions:
    """From the harness options; None means the agent's own default."""

    model: str | None = None
    max_turns: int | None = None


@dataclass(frozen=True)
class Endpoints:
    """What the container sees: the relay's loopback URLs of the model gateway."""

    anthropic_base_url: str
    openai_base_url: str
    placeholder_key: str  # never the real key
    subscriptions: frozenset[str] = frozenset()  # providers the gateway serves with a subscription token


def default_endpoints(subscriptions: frozenset[str] = frozenset()) -> Endpoints:
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    return Endpoints(anthropic_base_url=base, openai_base_url=f"{base}/v1", placeholder_key=PLACEHOLDER_KEY,
                     subscriptions=subscriptions)  # fmt: skip


def sdk_env(endpoints: Endpoints) -> dict[str, str]:
    """Base URLs and placeholder keys for Anthropic- and OpenAI-style SDKs (and `--agent-cmd` scripts)."""
    env = {
        "ANTHROPIC_BASE_URL": endpoints.anthropic_base_url,
        "ANTHROPIC_API_KEY": endpoints.placeholder_key,
        "OPENAI_BASE_URL": endpoints.openai_base_url,
        "OPENAI_API_KEY": endpoints.placeholder_key,
    }
    if "anthropic" in endpoints.subscriptions:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = endpoints.placeholder_key  # the gateway puts the real token on
    return env


class AgentAdapter(ABC):
    """How one known agent CLI is started in the container and how its output is read."""

    name: str
    image: str  # the image it runs in when --image is not given
    description: str

    @abstractmethod
    def command(self, options: AgentOptions, endpoints: Endpoints) -> list[str]:
        """The argv run in the container (cwd /workspace, prompt at /harness/prompt.md, HOME writable)."""

    def env(self, options: AgentOptions, endpoints: Endpoints) -> dict[str, str]:
        """Non-secret environment: base URLs, placeholder keys, switches that keep the agent offline."""
        return sdk_env(endpoints)

    def parse_output(self, log_path: Path) -> AgentReport | None:
        """What the agent's structured output says about its run; None when it has nothing to say."""
        return None


def read_tail(log_path: Path, max_bytes: int = REPORT_TAIL_BYTES) -> list[str]:
    """The last lines of a log (at most `max_bytes`); a line cut by the start of the window is dropped."""
    try:
        with log_path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(0, size - max_bytes)
            handle.seek(start)
            data = handle.read(max_bytes)
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if start > 0 and lines else lines


def json_events(lines: list[str]) -> Iterator[dict[str, Any]]:
    """JSON objects among the lines, in order; anything else (warnings, garbage, cut lines) is skipped."""
    for line in lines:
        text = line.strip()
        if not text.startswith("{") or len(text) > MAX_EVENT_LINE:
            continue
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):  # garbage, a cut line, or absurd nesting
            continue
        if isinstance(event, dict):
            yield event


def count(value: object) -> int:
    """A token count from untrusted JSON: a non-negative int, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def money(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def text(value: object, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) else None
