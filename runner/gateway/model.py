"""The model gateway (design §4 item 5): the agent's only road to a model API.

It listens on a Unix socket that is bind-mounted into the agent's container (a relay inside turns it
into `http://127.0.0.1:PORT`). The agent is the client it serves and is not trusted: the gateway
forwards only the exact routes of `routes.py`, removes whatever credential the agent sent and adds the
real key from the host's environment, streams the upstream's answer back as it comes with every secret
value redacted from its headers and body (an upstream that echoes request headers would otherwise hand
the key back), and counts tokens and cost from the usage the answer carries. `--max-cost` is a
reservation (`budget.py`). Connections are capped, a request head must arrive within a deadline and a
body within another, and the body limit holds while reading. The key exists only in this process:
never in the container, its environment, a response, a log or the journal.

Why one module of this size: one request's whole life (accepted, admitted, reserved, forwarded with its
answer redacted as it streams, metered, recorded and settled) reads from top to bottom here; every piece
with logic of its own lives beside it (routes, budget, usage, usage_limits, upstreams, credentials, chatgpt).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runner.base import trust
from runner.base.redact import RedactingSink, Redactor
from runner.gateway.budget import Budget, Reservation
from runner.gateway.loop import bind_unix_socket
from runner.gateway.prices import PriceTable
from runner.gateway.routes import Match, Provider, Route, match
from runner.gateway.upstreams import Upstream, secret_keys
from runner.gateway.usage import UsageMeter
from runner.gateway.usage_limits import MAX_ERROR_BODY, UsageLimit, usage_limit
from runner.record.models import GatewayUsage, TokenUsage, UsageLimitFact, utcnow

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024**2
MAX_ACTIVE = 32  # upstream requests at once
MAX_WAITING = 128  # beyond active ones; more than that are refused at once with 503
MAX_CONNECTIONS = 192  # open connections; past it new ones wait in the socket's backlog (active + waiting + some)
HEADER_TIMEOUT = 30.0  # seconds for a request head, from the connection's start or the previous answer's end
BODY_TIMEOUT = 60.0  # seconds to receive a whole request body
LINGER_SECONDS = 1.0  # the rest of a refused body is read and dropped for this long, then the connection closes
MAX_LOG_BYTES = 32 * 1024**2
RETRY_AFTER_CAP = 24 * 3600.0
BACKLOG = 2048  # connections that may wait to be accepted (no descriptor of ours); past it a client is refused
# What a request may produce when it does not say (max_tokens & co.), and the most it is ever estimated at:
# the largest output of current models. A larger `max_tokens` is refused by the provider anyway.
MAX_OUTPUT_TOKENS = 128_000
# The cheapest request each provider serves, to ask whether a spent usage window has room again.
PROBES: dict[Provider, tuple[str, dict[str, Any]]] = {
    "anthropic": ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 1,
                                   "messages": [{"role": "user", "content": "."}]}),
    "openai": ("/v1/responses", {"model": "gpt-5-nano", "input": ".", "max_output_tokens": 16}),
}  # fmt: skip
_OUTPUT_FIELDS = {"messages": ("max_tokens",), "chat": ("max_completion_tokens", "max_tokens"),
                  "responses": ("max_output_tokens",)}  # fmt: skip

_DROP_RESPONSE = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "set-cookie",
    "trailer", "upgrade",
})  # fmt: skip


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


def output_tokens_asked(api: str, payload: Mapping[str, Any]) -> int:
    """The most output a request may produce: what it asks for, else (or above it) MAX_OUTPUT_TOKENS."""
    for name in _OUTPUT_FIELDS.get(api, ()):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, MAX_OUTPUT_TOKENS)
    return MAX_OUTPUT_TOKENS


@dataclass(frozen=True)
class Reservations:
    """What one request holds of each budget until it settles."""

    dollars: Reservation
    tokens: Reservation


@dataclass
class _Counters:
    usage: GatewayUsage = field(default_factory=GatewayUsage)
    last_status: int | None = None  # of the last upstream answer


class _Buffer:
    """An OutputSink that keeps what it is given until taken (the redactor's output, then the socket)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data

    def flush(self) -> None:
        pass  # nothing is held: `take` hands everything on


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
        max_tokens: int | None = None,
        spent_before_tokens: int = 0,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_active: int = MAX_ACTIVE,
        max_waiting: int = MAX_WAITING,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        secrets: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.upstreams = dict(upstreams)
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.budget = Budget(max_cost_usd, spent_before_usd)
        self.max_tokens = max_tokens
        self.token_budget = Budget(max_tokens, spent_before_tokens)  # a subscriber's budget: tokens, not dollars
        self.max_body_bytes = max_body_bytes
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # Every key, and every value the user marked secret, is taken out of what goes back to the agent.
        self._secrets = {**secret_keys(self.upstreams), **(secrets or {})}
        self.redactor = Redactor(self._secrets)
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._total = _Counters()
        self._iteration = _Counters()
        self._iteration_number = 0
        self._log_bytes = 0
        self._pending = 0
        self.open_connections = 0
        self.times_at_cap = 0  # how often a connection had to wait for the cap
        self._room: asyncio.Event | None = None  # set when a connection closes
        self._accepting: asyncio.Task[None] | None = None
        self._active: asyncio.Semaphore | None = None
        self._server: Any = None
        self._listener: socket.socket | None = None
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
        return self.budget.spent

    def budget_spent(self) -> bool:
        return self.budget.exhausted() or self.token_budget.exhausted()

    # ---- lifecycle, in the server thread's loop ---------------------------------------------

    async def start(self) -> None:
        import aiohttp
        from aiohttp import web

        gateway = self

        class _Server(web.Server):  # aiohttp's low-level server, counting its connections
            def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
                super().connection_lost(handler, exc)
                gateway.open_connections -= 1
                if gateway._room is not None:
                    gateway._room.set()

        self._active = asyncio.Semaphore(self.max_active)
        self._room = asyncio.Event()
        context = self._ssl or trust.ssl_context()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=self.max_active),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=900),
            auto_decompress=True,
            trust_env=False,  # the host's proxy settings are for the host, and the gateway needs none here
        )
        # keepalive_timeout is aiohttp's deadline for a request head, counted from the connection's start
        # or the previous answer's end; bytes trickling in do not extend it. lingering_time: how long the
        # rest of a refused body is read and dropped before the connection closes (closing with unread
        # input would reset it before the client reads the refusal).
        self._server = _Server(self._handle, handler_cancellation=False, keepalive_timeout=self.header_timeout,
                               lingering_time=LINGER_SECONDS, access_log=None)  # fmt: skip
        self._listener = bind_unix_socket(self.socket_path)
        self._listener.listen(BACKLOG)
        self._accepting = asyncio.ensure_future(self._accept_loop(self._listener))

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept one connection at a time while under the cap. Past it, nothing is accepted: new
        connections wait in the socket's backlog, holding no descriptor of the supervisor's, until one
        closes (an idle one does at the head deadline). asyncio's own server accepts a whole backlog at
        once, which a flood turns into a descriptor per connection."""
        loop = asyncio.get_running_loop()
        assert self._room is not None  # noqa: S101 - set by start()
        while True:
            if self.open_connections >= self.max_connections:
                if not self.times_at_cap:
                    self._log({"ts": utcnow().isoformat(), "iteration": self._iteration_number,
                               "refused": "connection-cap", "openConnections": self.open_connections})  # fmt: skip
                self.times_at_cap += 1
                while self.open_connections >= self.max_connections:
                    self._room.clear()
                    await self._room.wait()
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, or the client gave up: try again shortly
                log.debug("gateway accept: %s", exc)
                await asyncio.sleep(0.05)
                continue
            self.open_connections += 1
            try:
                await loop.connect_accepted_socket(self._server, conn)
            except OSError:
                conn.close()
                self.open_connections -= 1

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.socket_path.unlink(missing_ok=True)
        if self._server is not None:
            await self._server.shutdown(1.0)
        if self._session is not None:
            await self._session.close()
        if self.times_at_cap:
            self._log({"ts": utcnow().isoformat(), "refused": "connection-cap", "timesAtCap": self.times_at_cap})

    # ---- requests ---------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        matched = match(request.method, request.raw_path)
        route = matched.route if matched else None
        provider: Provider = route.provider if route and route.provider else _guess_provider(request.headers)
        if matched is None or route is None:
            return self._refuse(provider, 404, "not_found_error", f"harness gateway: no route for {request.method} "
                                f"{request.raw_path[:200]}", request, reason="unknown-path")  # fmt: skip
        # Bounded before anything is read: a flood waits in no queue and holds no body in memory.
        if self._pending >= self.max_active + self.max_waiting:
            return self._refuse(provider, 503, "overloaded_error", "harness gateway: too many requests at once",
                                request, reason="too-many-requests")  # fmt: skip
        self._pending += 1
        try:
            return await self._admit(request, matched, provider)
        finally:
            self._pending -= 1

    async def _admit(self, request: web.BaseRequest, matched: Match, provider: Provider) -> web.StreamResponse:
        route = matched.route
        body = await self._read_body(request)
        if isinstance(body, int):
            reason, message = {
                413: ("body-too-large", f"request body over {self.max_body_bytes} bytes"),
                408: ("body-timeout", f"request body not received within {self.body_timeout:g}s"),
            }[body]
            return self._refuse(provider, body, "request_too_large" if body == 413 else "invalid_request_error",
                                f"harness gateway: {message}", request, reason=reason)  # fmt: skip
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
        if route.api == "chat" and payload.get("stream") is True:
            # Without it a streamed chat completion carries no usage, and could not be counted.
            given = payload.get("stream_options")
            options: dict[str, Any] = given if isinstance(given, dict) else {}
            if not options.get("include_usage"):
                payload["stream_options"] = {**options, "include_usage": True}
                body = json.dumps(payload).encode()
        reservation = None
        if route.api is not None:
            reservation, spent = await self._reserve(route, provider, payload, len(body))
            if reservation is None:
                with self._lock:
                    for counters in (self._total, self._iteration):
                        counters.usage.refused_budget += 1
                        counters.usage.refused_tokens += 1 if spent == "tokens" else 0
                what = f"--max-cost of ${self.max_cost_usd or 0:.2f}" if spent == "cost" else (
                    f"--max-tokens of {self.max_tokens or 0:,} tokens")  # fmt: skip
                return self._refuse(provider, 403, "permission_error" if provider == "anthropic" else "budget_exceeded",
                                    f"harness gateway: the session's {what} is spent "
                                    "(not a transient error; do not retry)", request, reason="budget")  # fmt: skip
        assert self._active is not None  # noqa: S101 - set by start()
        async with self._active:
            return await self._forward(request, matched, provider, payload, body, reservation)

    async def _read_body(self, request: web.BaseRequest) -> bytes | int:
        """The whole body, or 413 (over the limit, checked as it arrives) or 408 (too slow)."""
        if (request.content_length or 0) > self.max_body_bytes:
            return 413
        parts: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        try:
            async with asyncio.timeout_at(deadline):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        return 413
                    parts.append(chunk)
        except TimeoutError:
            return 408
        return b"".join(parts)

    async def _reserve(
        self, route: Route, provider: Provider, payload: Mapping[str, Any], body_bytes: int
    ) -> tuple[Reservations | None, Literal["cost", "tokens"] | None]:
        """Both budgets' reservations for one request, dollars first (every request takes them in this order, so
        none holds one while waiting for another that a waiter holds); (None, which) when one is spent."""
        dollars = await self.budget.reserve(self._estimate(route, provider, payload, body_bytes))
        if dollars is None:
            return None, "cost"
        tokens = await self.token_budget.reserve(body_bytes + output_tokens_asked(route.api or "", payload))
        if tokens is None:
            self.budget.settle(dollars, 0.0)
            return None, "tokens"
        return Reservations(dollars, tokens), None

    def _estimate(self, route: Route, provider: Provider, payload: Mapping[str, Any], body_bytes: int) -> float:
        """A request's worst-case cost: one input token per byte of its body (no tokenizer makes more
        tokens than bytes of text), and all the output it may ask for, at its model's price (or the
        provider's dearest for a model the table does not know)."""
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        price, _ = self.prices.lookup(model, provider)
        return price.worst_case(body_bytes, output_tokens_asked(route.api or "", payload))

    async def _forward(
        self, request: web.BaseRequest, matched: Match, provider: Provider, payload: dict[str, Any], body: bytes,
        reservation: Reservations | None,
    ) -> web.StreamResponse:  # fmt: skip
        import aiohttp
        from aiohttp import web

        route = matched.route
        upstream = self.upstreams[provider]
        request_model = payload.get("model") if isinstance(payload.get("model"), str) else None
        if upstream.chatgpt is not None and upstream.chatgpt.stale() and await upstream.chatgpt.fresh(self._session):
            self._secrets.update(upstream.chatgpt.secrets())  # the new tokens are redacted too
            self.redactor = Redactor(self._secrets)
        headers = upstream.request_headers(request.headers)
        headers["accept-encoding"] = "identity"
        started = time.monotonic()
        meter: UsageMeter | None = None
        response: web.StreamResponse | None = None
        status: int | None = None
        retry_after, error = None, None
        try:
            async with self._session.request(
                request.method, upstream.url(matched), data=body or None, headers=headers, allow_redirects=False,
            ) as upstream_response:  # fmt: skip
                status = upstream_response.status
                if status == 401 and upstream.chatgpt is not None:
                    upstream.chatgpt.expire()  # refreshed before the agent's retry
                retry_after = parse_retry_after(upstream_response.headers.get("retry-after"))
                # The answer's own framing says whether it streams, not the request's `stream` field.
                streaming = upstream_response.content_type == "text/event-stream"
                meter = UsageMeter(route.api or "messages", streaming=streaming, request_model=request_model)
                response = web.StreamResponse(status=status, reason=self.redactor.text(upstream_response.reason or ""))
                for name, value in upstream_response.headers.items():
                    if name.lower() not in _DROP_RESPONSE and self.redactor.text(name) == name:
                        response.headers.add(name, self.redactor.text(value))
                await response.prepare(request)
                out = _Buffer()
                sink = RedactingSink(self.redactor, out) if self.redactor else out
                refusal = bytearray()  # a 429's body, read for a usage limit
                async for chunk in upstream_response.content.iter_any():
                    if route.api is not None and status < 400:
                        meter.feed(chunk)
                    if status == 429 and len(refusal) <= MAX_ERROR_BODY:
                        refusal += chunk[: MAX_ERROR_BODY + 1 - len(refusal)]
                    sink.write(chunk)
                    if data := out.take():
                        await response.write(data)  # as it comes: SSE is never buffered here
                sink.flush()
                if data := out.take():
                    await response.write(data)
                limit = usage_limit(provider, status, upstream_response.headers, bytes(refusal))
                # Counted before the agent sees the end, so the totals never lag its last answer.
                self._count(request, provider, route, status, meter, started, retry_after, None, reservation, limit)
                reservation = None
                await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Before the answer began: the agent gets a clear 502. After: the stream is cut (the
            # agent or the upstream went away) and what streamed is still counted.
            error = type(exc).__name__
            if status is None and isinstance(exc, aiohttp.ClientConnectorError):
                status = 502  # nothing reached the provider: nothing to charge
        if reservation is not None:
            self._count(request, provider, route, status, meter, started, retry_after, error, reservation)
        if response is None or not response.prepared:
            return self._refuse(provider, 502, "api_error", f"harness gateway: the upstream failed ({error})", None,
                                reason="upstream-error")  # fmt: skip
        return response

    async def probe(self, provider: Provider) -> UsageLimit | None:
        """Whether `provider` has room again, by the cheapest request it serves (one output token of its
        smallest model): the usage limit it still reports, or None (room, or an answer that is not a limit:
        the next iteration will tell). Counted as a request; never raises for the upstream's faults."""
        import aiohttp

        upstream = self.upstreams[provider]
        path, body = PROBES[provider]
        matched = match("POST", path)
        assert matched is not None  # noqa: S101 - PROBES are routes of the table
        headers = upstream.request_headers({"content-type": "application/json", "anthropic-version": "2023-06-01"})
        started = time.monotonic()
        try:
            async with self._session.post(upstream.url(matched), json=body, headers=headers,
                                          allow_redirects=False) as answer:  # fmt: skip
                data = await answer.content.read(MAX_ERROR_BODY + 1)
                status, limit = answer.status, usage_limit(provider, answer.status, answer.headers, data)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("usage-limit probe of %s failed: %s", provider, type(exc).__name__)
            return None
        fact = None if limit is None else UsageLimitFact(resets_at=limit.resets_at, window=limit.window,
                                                         provider=provider)  # fmt: skip
        with self._lock:
            for counters in (self._total, self._iteration):
                counters.usage.requests += 1
        self._log({
            "ts": utcnow().isoformat(), "iteration": self._iteration_number, "method": "POST", "path": path,
            "provider": provider, "probe": True, "status": status,
            "latencyMs": round((time.monotonic() - started) * 1000),
            **({} if fact is None else {"usageLimit": fact.model_dump(mode="json", by_alias=True)}),
        })  # fmt: skip
        return limit

    def _count(
        self, request: web.BaseRequest, provider: Provider, route: Route, status: int | None,
        meter: UsageMeter | None, started: float, retry_after: float | None, error: str | None,
        reservation: Reservations | None, limit: UsageLimit | None = None,
    ) -> None:  # fmt: skip
        """Record one forwarded request and settle its reservation.

        `status` None: the request may have reached the provider but no answer came back."""
        usage, model, counted, final = TokenUsage(), None, False, False
        if meter is not None:
            meter.finish()
            usage, model, counted, final = meter.usage, meter.model, meter.seen, meter.final
        cost, known = self.prices.cost(model, provider, usage) if counted else (0.0, True)
        subscription = self.upstreams[provider].kind == "subscription"
        if subscription:
            cost, known = 0.0, True  # a subscription is not billed per token: --max-tokens is its budget
        if reservation is not None:
            # The provider bills what it produced; an error answer is not billed. Where the closing usage
            # never arrived (the agent hung up, the stream was cut, no answer), what it cost is unknown:
            # the reservation is its charge.
            unknown = status is None or (status < 400 and not final)
            charge = max(cost, reservation.dollars.estimate) if unknown and not subscription else cost
            tokens = int(max(usage.total, reservation.tokens.estimate)) if unknown else usage.total
            if unknown:
                error = error or "no final usage"
            self.budget.settle(reservation.dollars, charge)
            self.token_budget.settle(reservation.tokens, tokens)
            cost = charge
        else:
            tokens = usage.total
        self._record(request, provider, route, status or 502, model, usage, cost, known, started, retry_after,
                     error=error, limit=limit, budget_tokens=tokens)  # fmt: skip

    def _record(
        self,
        request: web.BaseRequest,
        provider: Provider,
        route: Route,
        status: int,
        model: str | None,
        usage: TokenUsage,
        cost: float,
        known: bool,
        started: float,
        retry_after: float | None = None,
        *,
        error: str | None = None,
        limit: UsageLimit | None = None,
        budget_tokens: int = 0,
    ) -> None:
        rate_limited = status in {429, 529}
        fact = None if limit is None else UsageLimitFact(resets_at=limit.resets_at, window=limit.window,
                                                         provider=provider)  # fmt: skip
        with self._lock:
            for counters in (self._total, self._iteration):
                u = counters.usage
                u.requests += 1
                u.tokens = u.tokens + usage
                u.budget_tokens += budget_tokens
                u.cost_usd = round(u.cost_usd + cost, 6)
                u.unpriced_requests += 0 if known else 1
                u.rate_limited += 1 if rate_limited else 0
                u.errors += 1 if status >= 400 and not rate_limited else 0
                if rate_limited:
                    u.retry_after_seconds = retry_after
                if fact is not None:
                    u.usage_limited += 1
                    u.usage_limit = fact
                counters.last_status = status
        self._log({
            "ts": utcnow().isoformat(), "iteration": self._iteration_number, "method": request.method,
            "path": request.path, "provider": provider, "api": route.api, "model": model, "status": status,
            "inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "cacheReadTokens": usage.cache_read_tokens, "cacheWriteTokens": usage.cache_write_tokens,
            "costUsd": round(cost, 6), "priced": known, "spentUsd": round(self.budget.spent, 6),
            "latencyMs": round((time.monotonic() - started) * 1000), "retryAfter": retry_after, "error": error,
            **({} if fact is None else {"usageLimit": fact.model_dump(mode="json", by_alias=True)}),
        })  # fmt: skip

    def _refuse(
        self, provider: Provider, status: int, kind: str, message: str, request: web.BaseRequest | None, *,
        reason: str,
    ) -> web.Response:  # fmt: skip
        from aiohttp import web

        if request is not None:
            self._log({
                "ts": utcnow().isoformat(), "iteration": self._iteration_number, "method": request.method,
                "path": request.raw_path[:200], "provider": provider, "status": status, "refused": reason,
            })  # fmt: skip
        response = web.Response(
            status=status,
            body=_error_body(provider, kind, message),
            content_type="application/json",
            headers={"x-harness-gateway": reason},
        )
        if reason in {"body-too-large", "body-timeout", "too-many-requests"}:
            # The rest of that body is not worth reading, and under load the connection is worth more to a
            # client waiting for one (past the cap, new connections wait to be accepted): it ends here.
            response.force_close()
        return response

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
