"""Which of the host's model credentials a run will use, decided before anything is created.

No credential, no start: an agent whose provider has no credential on the host would only collect
upstream errors all night, so `run` refuses at once, naming the variables that would serve. An agent's
default model follows the credentials the host has (aider picks its model by the keys it sees, and the
container holds a placeholder for every provider).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from runner.base.errors import UsageError
from runner.gateway.credentials import Credential, sources_text
from runner.gateway.routes import Provider

# The provider each built-in agent calls (aider's depends on its model; custom commands and demo: not known).
AGENT_PROVIDER: dict[str, Provider] = {"claude-code": "anthropic", "codex": "openai"}
# aider's own default for an OpenAI key alone (aider/onboarding.py), named so the plan and journal show it.
AIDER_OPENAI_DEFAULT = "gpt-4o"
_ANTHROPIC_MODEL = re.compile(r"(anthropic/|claude|sonnet$|opus$|haiku$)", re.IGNORECASE)


def model_provider(model: str) -> Provider:
    """The provider an aider model name goes to (a bare name goes to the OpenAI-compatible endpoint)."""
    return "anthropic" if _ANTHROPIC_MODEL.match(model) else "openai"


def choose_credentials(
    agent: str, model: str | None, found: Mapping[Provider, Credential]
) -> tuple[str | None, list[Credential]]:
    """(the model to run, the credentials it will use); raises UsageError when none would serve."""
    if agent in AGENT_PROVIDER:
        provider = AGENT_PROVIDER[agent]
        return model, [_need(agent, provider, found)]
    if agent != "aider":
        return model, []  # demo calls no model; a custom command's provider is its own business
    if model is not None:
        return model, [_need(agent, model_provider(model), found)]
    if "anthropic" in found:
        return None, [found["anthropic"]]  # aider's own default (sonnet) is an Anthropic model
    if "openai" in found:
        return AIDER_OPENAI_DEFAULT, [found["openai"]]
    raise UsageError(
        "--agent aider needs a model credential on the host: set ANTHROPIC_API_KEY or OPENAI_API_KEY in the "
        "environment harness runs in (the container only ever gets a placeholder)"
    )


def _need(agent: str, provider: Provider, found: Mapping[Provider, Credential]) -> Credential:
    if provider not in found:
        raise UsageError(
            f"--agent {agent} needs a model credential on the host: set {sources_text(provider)} in the "
            "environment harness runs in (the container only ever gets a placeholder)"
        )
    return found[provider]
