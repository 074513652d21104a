"""The model gateway (design §4 item 5): the agent's only road to a model API.

It listens on a Unix socket that is bind-mounted into the agent's container (a relay inside turns it
into `http://127.0.0.1:PORT`). For each request it removes whatever credential the agent sent, adds
the real key from the host's environment, streams the upstream's answer back byte for byte, and
counts tokens and cost from the usage the answer carries. Once `--max-cost` is spent it refuses
further requests with an error that no SDK retries. The key exists only in this process: never in
the container, its environment, a response, a log or the journal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

from runner.gateway.prices import PriceTable
from runner.gateway.usage import Api, UsageMeter
from runner.models import GatewayUsage, TokenUsage, utcnow

log = logging.getLogger(__name__)

Provider = Literal["anthropic", "openai"]

ANTHROPIC_DEFAULT = "https://api.anthropic.com"
OPENAI_DEFAULT = "https://api.openai.com/v1"
MAX_BODY_BYTES = 32 * 1024**2
MAX_ACTIVE = 32  # upstream requests at once
MAX_WAITING = 128  # beyond active ones; more than that are refused at once with 503
MAX_LOG_BYTES = 32 * 1024**2
RETRY_AFTER_CAP = 24 * 3600.0
BACKLOG = 2048  # connections a burst may queue before accept; past it a client is refused, not hung

# Credentials and hop-by-hop headers never cross the gateway; every other header passes untouched.
_DROP_REQUEST = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-connection", "x-api-key", "authorization", "api-key", "cookie",
    "accept-encoding",
})  # fmt: skip
_DROP_RESPONSE = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "set-cookie",
    "trailer", "upgrade",
})  # fmt: skip


@dataclass(frozen=True)
class Route:
    provider: Provider | None  # None: decided by the request's headers
    api: Api | None  # None: forwarded, nothing to count


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/v1/messages"): Route("anthropic", "messages"),
    ("POST", "/v1/messages/count_tokens"): Route("anthropic", None),
    ("POST", "/v1/responses"): Route("openai", "responses"),
    ("POST", "/v1/chat/completions"): Route("openai", "chat"),
    ("GET", "/v1/models"): Route(None, None),
}


@dataclass(frozen=True)
class Upstream:
    provider: Provider
    base_url: str  # Anthropic's without /v1, OpenAI's with it (as their SDKs take them)
    key: str | None = field(repr=False)

    def url(self, path: str, query: str) -> str:
        suffix = path[len("/v1") :] if self.provider == "openai" else path
        return self.base_url.rstrip("/") + suffix + (f"?{query}" if query else "")

    def credential(self) -> dict[str, str]:
        if not self.key:
            return {}
        return {"x-api-key": self.key} if self.provider == "anthropic" else {"authorization": f"Bearer {self.key}"}


def upstreams_from_env(env: Mapping[str, str] | None = None) -> dict[Provider, Upstream]:
    """The real endpoints and keys, from the host's environment (never the container's)."""
    env = os.environ if env is None else env
    return {
        "anthropic": Upstream(
            "anthropic",
            env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT,
            env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN") or None,
        ),
        "openai": Upstream("openai", env.get("OPENAI_BASE_URL") or OPENAI_DEFAULT, env.get("OPENAI_API_KEY") or None),
    }


def secret_keys(upstreams: Mapping[Provider, Upstream]) -> dict[str, str]:
    """The real keys by name, for the redactor: they must never appear in any log."""
    return {f"{u.provider.upper()}_API_KEY": u.key for u in upstreams.values() if u.key}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _error_body(provider: Provider, kind: str, message: str) -> bytes:
    if provider == "anthropic":
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()


@dataclass
class _Counters:
    usage: GatewayUsage = field(default_factory=GatewayUsage)
    last_status: int | None = None  # of the last upstream answer


class ModelGateway:
    """One session's gateway. Its aiohttp server runs in a `ServerThread`'s event loop; the
    supervisor reads its counters from its own thread."""

    def __init__(
        self,
        *,
        socket_path: Path,
        log_path: Path,
        upstreams: Mapping[Provider, Upstream],
        prices: PriceTable,
        max_cost_usd: float | None = None,
        spent_before_usd: float = 0.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_active: int = MAX_ACTIVE,
        max_waiting: int = MAX_WAITING,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.upstreams = dict(upstreams)
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.spent_before_usd = spent_before_usd
        self.max_body_bytes = max_body_bytes
        self.max_active = max_active
        self.max_waiting = max_waiting
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._total = _Counters()
        self._iteration = _Counters()
        self._iteration_number = 0
        self._log_bytes = 0
        self._pending = 0
        self._active: asyncio.Semaphore | None = None
        self._runner: Any = None
        self._session: Any = None

    # ---- what the supervisor asks, from its own thread -------------------------------------

    def begin_iteration(self, n: int) -> None:
        with self._lock:
            self._iteration = _Counters()
            self._iteration_number = n

    def iteration_usage(self) -> GatewayUsage:
        with self._lock:
            return self._iteration.usage.model_copy(deep=True)

    def total_usage(self) -> GatewayUsage:
        """Everything this gateway counted since it started (this supervisor's share of the session)."""
        with self._lock:
            return self._total.usage.model_copy(deep=True)

    def last_upstream_status(self) -> int | None:
        with self._lock:
            return self._iteration.last_status

    def spent_usd(self) -> float:
        with self._lock:
            return self.spent_before_usd + self._total.usage.cost_usd

    def budget_spent(self) -> bool:
        return self.max_cost_usd is not None and self.spent_usd() >= self.max_cost_usd

    # ---- lifecycle, in the server thread's loop ---------------------------------------------

    async def start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._active = asyncio.Semaphore(self.max_active)
        context = self._ssl or default_ssl_context()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=self.max_active),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=900),
            auto_decompress=True,
            trust_env=False,  # the host's proxy settings are for the host, and the gateway needs none here
        )
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await bind_unix_site(self._runner, self.socket_path)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ---- requests ---------------------------------------------------------------------------

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        route = ROUTES.get((request.method, request.path))
        if route is None and request.method == "GET" and request.path.startswith("/v1/models/"):
            route = Route(None, None)
        provider: Provider = route.provider if route and route.provider else _guess_provider(request.headers)
        if route is None:
            return self._refuse(provider, 404, "not_found_error", f"harness gateway: no route for {request.method} "
                                f"{request.path[:200]}", request, reason="unknown-path")  # fmt: skip
        try:
            body = await request.read()  # bounded by client_max_size; read first so a refusal is clean
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(provider, 413, "request_too_large",
                                f"harness gateway: request body over {self.max_body_bytes} bytes", request,
                                reason="body-too-large")  # fmt: skip
        if self._pending >= self.max_active + self.max_waiting:
            return self._refuse(provider, 503, "overloaded_error", "harness gateway: too many requests at once",
                                request, reason="too-many-requests")  # fmt: skip
        self._pending += 1
        try:
            payload: dict[str, Any] = {}
            if request.method == "POST":
                try:
                    parsed = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    parsed = None
                if not isinstance(parsed, dict):
                    return self._refuse(provider, 400, "invalid_request_error",
                                        "harness gateway: the body is not a JSON object", request,
                                        reason="malformed-json")  # fmt: skip
                payload = parsed
            if route.api is not None and self.budget_spent():
                with self._lock:
                    for counters in (self._total, self._iteration):
                        counters.usage.refused_budget += 1
                return self._refuse(provider, 403, "permission_error" if provider == "anthropic" else "budget_exceeded",
                                    f"harness gateway: the session's --max-cost of ${self.max_cost_usd:.2f} is spent "
                                    "(not a transient error; do not retry)", request, reason="budget")  # fmt: skip
            assert self._active is not None  # noqa: S101 - set by start()
            async with self._active:
                return await self._forward(request, route, provider, payload, body)
        finally:
            self._pending -= 1

    async def _forward(
        self, request: Any, route: Route, provider: Provider, payload: dict[str, Any], body: bytes
    ) -> Any:
        import aiohttp
        from aiohttp import web

        upstream = self.upstreams[provider]
        streaming = payload.get("stream") is True
        if route.api == "chat" and streaming:
            # Without it a streamed chat completion carries no usage, and could not be counted.
            given = payload.get("stream_options")
            options: dict[str, Any] = given if isinstance(given, dict) else {}
            if not options.get("include_usage"):
                payload["stream_options"] = {**options, "include_usage": True}
                body = json.dumps(payload).encode()
        request_model = payload.get("model") if isinstance(payload.get("model"), str) else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        headers.update(upstream.credential())
        headers["accept-encoding"] = "identity"
        started = time.monotonic()
        meter = UsageMeter(route.api or "messages", streaming=streaming, request_model=request_model)
        counted = False
        response: Any = None
        status, retry_after, error = 502, None, None
        try:
            async with self._session.request(
                request.method, upstream.url(request.path, request.query_string), data=body or None, headers=headers,
                allow_redirects=False,
            ) as upstream_response:  # fmt: skip
                status = upstream_response.status
                retry_after = parse_retry_after(upstream_response.headers.get("retry-after"))
                response = web.StreamResponse(status=status, reason=upstream_response.reason)
                for name, value in upstream_response.headers.items():
                    if name.lower() not in _DROP_RESPONSE:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    if route.api is not None and status < 400:
                        meter.feed(chunk)
                    await response.write(chunk)  # as it comes: SSE is never buffered here
                # Counted before the agent sees the end, so the totals never lag its last answer.
                self._count(request, provider, route, status, meter, started, retry_after, None)
                counted = True
                await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Before the answer began: the agent gets a clear 502. After: the stream is cut (the
            # agent or the upstream went away) and what streamed is still counted.
            error = type(exc).__name__
        if not counted:
            self._count(request, provider, route, status, meter, started, retry_after, error)
        if response is None or not response.prepared:
            return self._refuse(provider, 502, "api_error", f"harness gateway: the upstream failed ({error})", None,
                                reason="upstream-error")  # fmt: skip
        return response

    def _count(
        self, request: Any, provider: Provider, route: Route, status: int, meter: UsageMeter, started: float,
        retry_after: float | None, error: str | None,
    ) -> None:  # fmt: skip
        meter.finish()
        self._record(request, provider, route, status, meter.model, meter.usage, meter.seen, started, retry_after,
                     error=error)  # fmt: skip

    def _record(
        self,
        request: Any,
        provider: Provider,
        route: Route,
        status: int,
        model: str | None,
        usage: TokenUsage,
        counted: bool,
        started: float,
        retry_after: float | None = None,
        *,
        error: str | None = None,
    ) -> None:
        cost, known = self.prices.cost(model, provider, usage) if counted else (0.0, True)
        rate_limited = status in {429, 529}
        with self._lock:
            for counters in (self._total, self._iteration):
                u = counters.usage
                u.requests += 1
                u.tokens = u.tokens + usage
                u.cost_usd = round(u.cost_usd + cost, 6)
                u.unpriced_requests += 0 if known else 1
                u.rate_limited += 1 if rate_limited else 0
                u.errors += 1 if status >= 400 and not rate_limited else 0
                if rate_limited:
                    u.retry_after_seconds = retry_after
                counters.last_status = status
            spent = self.spent_before_usd + self._total.usage.cost_usd
        self._log({
            "ts": utcnow().isoformat(), "iteration": self._iteration_number, "method": request.method,
            "path": request.path, "provider": provider, "api": route.api, "model": model, "status": status,
            "inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "cacheReadTokens": usage.cache_read_tokens, "cacheWriteTokens": usage.cache_write_tokens,
            "costUsd": round(cost, 6), "priced": known, "spentUsd": round(spent, 6),
            "latencyMs": round((time.monotonic() - started) * 1000), "retryAfter": retry_after, "error": error,
        })  # fmt: skip

    def _refuse(self, provider: Provider, status: int, kind: str, message: str, request: Any, *, reason: str) -> Any:
        from aiohttp import web

        if request is not None:
            self._log({
                "ts": utcnow().isoformat(), "iteration": self._iteration_number, "method": request.method,
                "path": request.path[:200], "provider": provider, "status": status, "refused": reason,
            })  # fmt: skip
        return web.Response(
            status=status,
            body=_error_body(provider, kind, message),
            content_type="application/json",
            headers={"x-harness-gateway": reason},
        )

    def _log(self, line: dict[str, Any]) -> None:
        """One JSON line per request; never raises into the request path; capped."""
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        if self._log_bytes + len(data) > MAX_LOG_BYTES:
            return
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self._log_bytes += len(data)
        except OSError as exc:
            log.warning("gateway log %s: %s", self.log_path, exc.strerror)


def _guess_provider(headers: Mapping[str, str]) -> Provider:
    return "anthropic" if "anthropic-version" in headers or "x-api-key" in headers else "openai"


def default_ssl_context() -> ssl.SSLContext:
    """System trust plus the host's extra CA certificates (a corporate TLS proxy)."""
    from runner.images import extra_ca_files

    context = ssl.create_default_context()
    for cert in extra_ca_files():
        try:
            context.load_verify_locations(cafile=str(cert))
        except (OSError, ssl.SSLError) as exc:
            log.warning("extra CA certificate %s not loaded: %s", cert, exc)
    return context


async def bind_unix_site(runner: Any, path: Path) -> None:
    """Serve `runner` on a Unix socket at `path` that the agent's uid may connect to.

    A socket path is limited to 107 bytes; a deep harness home exceeds that, so the socket is
    bound through the short /proc/self/fd alias of its directory."""
    from aiohttp import web

    path.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        short = f"/proc/self/fd/{fd}/{path.name}" if len(str(path)) > 100 else str(path)
        site = web.UnixSite(runner, short, backlog=BACKLOG)
        await site.start()
    finally:
        os.close(fd)
    path.chmod(0o666)
