"""The user's model credentials, as the host holds them: which one serves each provider, of which kind.

The gateway puts the credential on each request; the container holds only placeholders. An API key is
billed per token (its dollars are metered, `--max-cost`); a subscription token (Claude Pro/Max's
`claude setup-token`) is not (`--max-tokens` is its budget), and its windows end in usage limits.

Order, per provider (the first set wins, as the agents' own CLIs choose): Anthropic's `ANTHROPIC_API_KEY`,
then `ANTHROPIC_AUTH_TOKEN`, then `CLAUDE_CODE_OAUTH_TOKEN`; OpenAI's `OPENAI_API_KEY`, then Codex's ChatGPT
sign-in (`auth.json`, chatgpt.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from runner.gateway.routes import Provider

CredentialKind = Literal["api-key", "subscription"]
# Claude Code sends it with a subscription token; the gateway makes sure every request carries it.
OAUTH_BETA = "oauth-2025-04-20"


@dataclass(frozen=True)
class Source:
    variable: str
    kind: CredentialKind
    hint: str  # where a user gets one


SOURCES: dict[Provider, tuple[Source, ...]] = {
    "anthropic": (
        Source("ANTHROPIC_API_KEY", "api-key", "an Anthropic API key"),
        Source("ANTHROPIC_AUTH_TOKEN", "api-key", "an Anthropic API token"),
        Source("CLAUDE_CODE_OAUTH_TOKEN", "subscription", "a Claude subscription token from `claude setup-token`"),
    ),
    "openai": (Source("OPENAI_API_KEY", "api-key", "an OpenAI API key"),),
}


@dataclass(frozen=True)
class Credential:
    provider: Provider
    kind: CredentialKind
    variable: str  # where it was read: never its value
    secret: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        """How the upstream gets it: Anthropic's key as x-api-key, a subscription token and OpenAI's key as bearer."""
        if self.provider == "anthropic" and self.kind == "api-key":
            return {"x-api-key": self.secret}
        return {"authorization": f"Bearer {self.secret}"}

    def describe(self) -> str:
        """'subscription token (CLAUDE_CODE_OAUTH_TOKEN)': its kind and where it comes from, never its value."""
        if self.kind == "subscription" and self.provider == "openai":
            return f"ChatGPT sign-in ({self.variable})"
        what = "subscription token" if self.kind == "subscription" else "API key"
        return f"{what} ({self.variable})"


def host_credentials(
    env: Mapping[str, str] | None = None, prefer: CredentialKind | None = None
) -> dict[Provider, Credential]:
    """The credential that serves each provider, from the host's environment (never the container's);
    `prefer` (--auth) keeps only credentials of that kind (a subscriber's night never bills an API key)."""
    from runner.gateway.chatgpt import chatgpt_auth

    env = os.environ if env is None else env
    found: dict[Provider, Credential] = {}
    for provider, sources in SOURCES.items():
        for source in sources:
            if prefer is not None and source.kind != prefer:
                continue
            if value := env.get(source.variable, "").strip():
                found[provider] = Credential(provider, source.kind, source.variable, value)
                break
    if "openai" not in found and prefer != "api-key" and (signed_in := chatgpt_auth(env)) is not None:
        found["openai"] = Credential("openai", "subscription", str(signed_in.path), signed_in.tokens.access_token)
    return found


def sources_text(provider: Provider) -> str:
    """'ANTHROPIC_API_KEY (an Anthropic API key) or CLAUDE_CODE_OAUTH_TOKEN (...)', for a refusal."""
    text = " or ".join(f"{s.variable} ({s.hint})" for s in SOURCES[provider])
    if provider == "openai":
        text += " or a ChatGPT sign-in (`codex login`: $CODEX_HOME/auth.json, else ~/.codex/auth.json)"
    return text


def with_beta(value: str | None, beta: str) -> str:
    """An `anthropic-beta` header value that includes `beta` (the agent's own betas kept, in order)."""
    betas = [b.strip() for b in (value or "").split(",") if b.strip()]
    return ",".join(betas if beta in betas else [*betas, beta])
