"""The model gateway's route table: the only requests that may reach a provider with the user's key.

A request is matched on its method and its *raw* target, exactly: no prefix, no decoding, no dot
segments, no trailing slash. Every other request is a 404 that never reaches the upstream. The
upstream URL is then built from parts (the configured base and the route's own path), never by
pasting what the agent sent into a string that an HTTP client would parse again: an encoded `?`,
`#` or `..` in the agent's path can therefore never become part of the upstream's path or query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from yarl import URL

from runner.gateway.usage import Api

Provider = Literal["anthropic", "openai"]

# One path segment naming a model: letters and digits first, then what model ids use (`.` `_` `:` `-`).
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# A query value the routes accept: short, plain, nothing an HTTP client would reinterpret.
QUERY_VALUE = re.compile(r"[A-Za-z0-9._:-]{0,128}")
MODEL_SEGMENT = "{model}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # exact, or with one MODEL_SEGMENT as its last segment
    provider: Provider | None  # None: decided by the request's headers (both providers have it)
    api: Api | None  # None: forwarded, nothing to count or charge
    query: frozenset[str] = frozenset()  # parameter names passed on; any other parameter is a 404


ROUTES: tuple[Route, ...] = (
    # `?beta=true`: Claude Code's marker for beta headers.
    Route("POST", "/v1/messages", "anthropic", "messages", frozenset({"beta"})),
    Route("POST", "/v1/messages/count_tokens", "anthropic", None, frozenset({"beta"})),
    Route("POST", "/v1/responses", "openai", "responses"),
    Route("POST", "/v1/chat/completions", "openai", "chat"),
    Route("GET", "/v1/models", None, None, frozenset({"beta", "limit", "after_id", "before_id", "client_version"})),
    Route("GET", "/v1/models/" + MODEL_SEGMENT, None, None, frozenset({"beta"})),
)


@dataclass(frozen=True)
class Match:
    route: Route
    path: str  # the request's path (equal to the route's, the model id filled in)
    query: tuple[tuple[str, str], ...]  # the parameters as sent, in order


def match(method: str, raw_target: str) -> Match | None:
    """The route of a request, from its method and raw target (path and query as sent), or None."""
    if "#" in raw_target:
        return None
    path, _, query_text = raw_target.partition("?")
    for route in ROUTES:
        if route.method == method and _path_matches(route.path, path):
            query = _parse_query(query_text, route.query)
            return None if query is None else Match(route, path, query)
    return None


def _path_matches(template: str, path: str) -> bool:
    if not template.endswith(MODEL_SEGMENT):
        return path == template
    prefix = template[: -len(MODEL_SEGMENT)]
    return path.startswith(prefix) and MODEL_ID.fullmatch(path[len(prefix) :]) is not None


def _parse_query(text: str, allowed: frozenset[str]) -> tuple[tuple[str, str], ...] | None:
    """The query's (name, value) pairs when every one is allowed and plain; None otherwise."""
    if not text:
        return ()
    pairs = []
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name not in allowed or not QUERY_VALUE.fullmatch(value):
            return None
        pairs.append((name, value))
    return tuple(pairs)


def upstream_url(base: URL, provider: Provider, matched: Match) -> URL:
    """The URL to forward `matched` to: the base's scheme, host, port and path, then the route's path.

    OpenAI's base includes `/v1` (as its SDKs take it), Anthropic's does not."""
    suffix = matched.path.removeprefix("/v1") if provider == "openai" else matched.path
    query = "&".join(f"{name}={value}" for name, value in matched.query)
    return URL.build(
        scheme=base.scheme,
        host=base.raw_host or "",
        port=base.explicit_port,
        path=base.raw_path.rstrip("/") + suffix,
        query_string=query,
        encoded=True,
    )


def parse_base_url(text: str) -> URL:
    """An upstream base URL from the host's environment: http(s), a host, no credentials, query or fragment.

    Raises ValueError with a one-line reason."""
    url = URL(text)
    if url.scheme not in {"http", "https"} or not url.raw_host:
        raise ValueError(f"{text!r} is not an http(s) URL with a host")
    if url.raw_user or url.raw_password or url.raw_query_string or url.raw_fragment:
        raise ValueError(f"{text!r}: credentials, a query or a fragment have no place in a base URL")
    return url
