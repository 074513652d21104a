"""aider, driven with one message per iteration.

aider has no shell tool, so it cannot run `git commit` or write $HARNESS_STATUS_FILE itself, and it will
not edit a file outside the repository (a --file outside the repo leaves it with no git repo at all).
So the wrapper below, in plain sight:
- gives aider the prompt plus one note: write the status JSON object into `.harness-status.json` in the
  repository (added to the chat with --file; excluded from git in the copy's .git/info/exclude);
- runs aider with --no-auto-commits (an excluded file in aider's own commit makes the whole commit
  fail), then commits whatever aider changed with `git add -A` (the exclude keeps aider's files out);
- delivers `.harness-status.json`, when aider wrote something into it, to $HARNESS_STATUS_FILE.
The report's content is the model's; the wrapper only moves it. aider's history files go to $HOME.
aider has no turn limit (--max-turns is not passed). Its model is `openai/<model>` on the gateway's
OpenAI-compatible endpoint unless the name already says its provider (`anthropic/...`). --no-stream
makes every reply carry its usage, so the gateway can count it. Tokens and cost are parsed from its
"Tokens: ... sent, ... received. Cost: $... message, $... session." lines (rounded like "2.1k"); it
prints no structured rate-limit facts (the gateway's are the ones that count).
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.agents.base import PROMPT_FILE, AgentAdapter, AgentOptions, Endpoints, read_tail, sdk_env
from runner.base.layout import HOME
from runner.record.models import AgentReport, TokenUsage

STATUS_IN_REPO = ".harness-status.json"
MESSAGE_FILE = f"{HOME}/aider-message.md"
NOTE = (
    "\n\n# Note for aider\n\nYou cannot run commands. Write the status JSON object described above into the "
    f"file `{STATUS_IN_REPO}` (already in the chat) instead of $HARNESS_STATUS_FILE: it is delivered there "
    "for you, and your changes are committed for you when you finish.\n"
)
FLAGS = (
    "--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore", "--add-gitignore-files",
    "--no-check-update", "--analytics-disable", "--no-show-model-warnings", "--no-show-release-notes",
    "--no-pretty", "--no-stream", "--no-fancy-input", "--no-detect-urls", "--no-suggest-shell-commands",
    "--chat-history-file", f"{HOME}/.aider.chat.history.md", "--input-history-file", f"{HOME}/.aider.input.history",
)  # fmt: skip
# $1 is the note; "$@" after the shift are aider's flags.
SCRIPT = (
    "S=.harness-status.json; "
    'printf ".aider*\\n%s\\n" "$S" >> "$(git rev-parse --git-path info/exclude)" || exit 125; '
    'rm -f "$S"; { cat ' + PROMPT_FILE + '; printf "%s" "$1"; } > ' + MESSAGE_FILE + " || exit 125; shift; "
    # aider fetches model metadata from GitHub unless its cache is fresh and not empty: seed one (litellm's
    # bundled table still answers for known models).
    'C="$HOME/.aider/caches"; mkdir -p "$C" && echo \'{"harness": {}}\' > "$C/model_prices_and_context_window.json"; '
    "aider --message-file " + MESSAGE_FILE + ' --file "$S" "$@"; rc=$?; '
    'git add -A && { git diff --cached --quiet || git commit -q -m "aider: iteration ${HARNESS_ITERATION:-?}"; }; '
    'if [ -f "$S" ] && [ ! -L "$S" ] && [ -s "$S" ]; then cat "$S" > "$HARNESS_STATUS_FILE"; fi; rm -f "$S"; '
    "exit $rc"
)


def aider_model(model: str) -> str:
    return model if "/" in model else f"openai/{model}"


class Aider(AgentAdapter):
    name = "aider"
    image = "harness-aider:latest"
    description = "aider (Paul Gauthier's AI pair programmer), one message per iteration"

    def command(self, options: AgentOptions, endpoints: Endpoints) -> list[str]:
        args = list(FLAGS)
        if options.model:
            args += ["--model", aider_model(options.model)]
        return ["sh", "-c", SCRIPT, "aider", NOTE, *args]

    def env(self, options: AgentOptions, endpoints: Endpoints) -> dict[str, str]:
        return {
            **sdk_env(endpoints),
            "OPENAI_API_BASE": endpoints.openai_base_url,  # what aider (litellm) reads for openai/ models
            "ANTHROPIC_API_BASE": endpoints.anthropic_base_url,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm's bundled prices, no fetch from GitHub
            "AIDER_ANALYTICS": "false",
            "AIDER_CHECK_UPDATE": "false",
        }

    def parse_output(self, log_path: Path) -> AgentReport | None:
        return parse_aider_output(read_tail(log_path))


_COUNT = r"(\d+(?:\.\d+)?)(k?)"
TOKENS_LINE = re.compile(
    rf"^Tokens: {_COUNT} sent(?:, {_COUNT} cache write)?(?:, {_COUNT} cache hit)?, {_COUNT} received\."
)
COST = re.compile(r"Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.")


def _tokens(number: str | None, k: str | None) -> int:
    if not number:
        return 0
    value = float(number) * (1000 if k else 1)
    return round(value) if value < 1e15 else 0


def parse_aider_output(lines: list[str]) -> AgentReport | None:
    usage: TokenUsage | None = None
    cost: float | None = None
    for line in lines:
        if len(line) > 400:
            continue
        match = TOKENS_LINE.match(line)
        if match:
            g = match.groups()
            sent, write, hit, received = (_tokens(g[i], g[i + 1]) for i in range(0, 8, 2))
            turn = TokenUsage(
                input_tokens=max(0, sent - write - hit),  # "sent" counts cache writes and (OpenAI) cache hits
                cache_write_tokens=write,
                cache_read_tokens=hit,
                output_tokens=received,
            )
            usage = turn if usage is None else usage + turn
        cost_match = COST.search(line) if line.startswith(("Tokens:", "Cost:")) else None
        if cost_match:
            cost = float(cost_match.group(2))  # the session's running total: the last one wins
    if usage is None and cost is None:
        return None
    return AgentReport(usage=usage, cost_usd=cost)
