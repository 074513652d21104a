"""Where the gateway's requests go and with which credential: the upstream of each provider, from the host's
environment (never the container's), and the headers it gets (the agent's own credentials never pass)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.base.errors import UsageError
from runner.gateway.chatgpt import BASE_URL as CHATGPT_BASE_URL
from runner.gateway.chatgpt import ChatGPTAuth, chatgpt_auth
from runner.gateway.credentials import OAUTH_BETA, Credential, CredentialKind, host_credentials, with_beta
from runner.gateway.routes import Match, Provider, parse_base_url, upstream_url

if TYPE_CHECKING:
    from yarl import URL

ANTHROPIC_DEFAULT = "https://api.anthropic.com"
OPENAI_DEFAULT = "https://api.openai.com/v1"

# Credentials and hop-by-hop headers never cross the gateway; every other header passes untouched.
_DROP_REQUEST = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-connection", "x-api-key", "authorization", "api-key", "cookie", "chatgpt-account-id",
    "accept-encoding",
})  # fmt: skip


@dataclass(frozen=True)
class Upstream:
    provider: Provider
    base_url: str  # Anthropic's without /v1, OpenAI's with it (as their SDKs take them)
    key: str | None = field(repr=False)
    kind: CredentialKind = "api-key"
    variable: str = ""  # where the key was read
    chatgpt: ChatGPTAuth | None = field(default=None, compare=False)  # a ChatGPT sign-in: tokens that refresh

    def url(self, matched: Match) -> URL:
        return upstream_url(parse_base_url(self.base_url), self.provider, matched)

    def as_credential(self) -> Credential | None:
        return Credential(self.provider, self.kind, self.variable, self.key) if self.key else None

    def credential(self) -> dict[str, str]:
        if self.chatgpt is not None:
            return self.chatgpt.headers()
        found = self.as_credential()
        return found.headers() if found is not None else {}

    def request_headers(self, agent_headers: Mapping[str, str]) -> dict[str, str]:
        """What the upstream gets: the agent's headers without its credential, then the real one; a
        subscription token also needs its beta flag, whatever the agent sent."""
        headers = forwarded_headers(agent_headers)
        headers.update(self.credential())
        if self.key and self.kind == "subscription" and self.provider == "anthropic":
            sent = [k for k in headers if k.lower() == "anthropic-beta"]
            headers["anthropic-beta"] = with_beta(",".join(headers.pop(k) for k in sent), OAUTH_BETA)
        return headers


def upstreams_from_env(
    env: Mapping[str, str] | None = None, prefer: CredentialKind | None = None
) -> dict[Provider, Upstream]:
    """The real endpoints and keys, from the host's environment (never the container's).

    Raises UsageError for a base URL the gateway cannot use."""
    env = os.environ if env is None else env
    found = host_credentials(env, prefer)
    bases: dict[Provider, str] = {"anthropic": env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT,
                                  "openai": env.get("OPENAI_BASE_URL") or OPENAI_DEFAULT}  # fmt: skip
    upstreams: dict[Provider, Upstream] = {}
    signed_in = chatgpt_auth(env) if found.get("openai") and found["openai"].kind == "subscription" else None
    if signed_in is not None and not env.get("OPENAI_BASE_URL"):
        bases["openai"] = CHATGPT_BASE_URL  # a ChatGPT plan is served by its own backend
    for provider, base in bases.items():
        c = found.get(provider)
        chatgpt = signed_in if provider == "openai" else None
        upstreams[provider] = Upstream(provider, base, c.secret if c else None, c.kind if c else "api-key",
                                       c.variable if c else "", chatgpt)  # fmt: skip
    for name, upstream in upstreams.items():
        try:
            parse_base_url(upstream.base_url)
        except ValueError as exc:
            raise UsageError(f"{name.upper()}_BASE_URL: {exc}") from None
    return upstreams


def secret_keys(upstreams: Mapping[Provider, Upstream]) -> dict[str, str]:
    """The real keys by name, for the redactor: they must never appear in any log or response."""
    keys = {u.variable or f"{u.provider.upper()}_API_KEY": u.key for u in upstreams.values() if u.key}
    for u in upstreams.values():
        keys.update(u.chatgpt.secrets() if u.chatgpt is not None else {})
    return keys


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The agent's headers the upstream gets: no credential, no hop-by-hop header, and none that the agent's
    own Connection header names (a proxy drops those too, RFC 9110 section 7.6.1)."""
    listed = {token.strip().lower() for name, value in headers.items() if name.lower() == "connection"
              for token in value.split(",")}  # fmt: skip
    return {k: v for k, v in headers.items() if k.lower() not in _DROP_REQUEST and k.lower() not in listed}
