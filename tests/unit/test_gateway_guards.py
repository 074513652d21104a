"""The model gateway against the agent it serves (issue 16), in-process on a real Unix socket.

Exact routes (raw path, built upstream URL), the budget as a reservation under concurrency, secrets
redacted from answers, bounded connections and timeouts, and the meter's edge cases. The same attacks
also run from inside a real container in tests/security/test_gateway_attacks.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runner.gateway.budget import Budget
from runner.gateway.loop import ServerThread
from runner.gateway.model import MAX_OUTPUT_TOKENS, ModelGateway, output_tokens_asked
from runner.gateway.prices import BUILTIN, PriceTable, canonical_model
from runner.gateway.routes import match, parse_base_url, upstream_url
from runner.gateway.upstreams import Upstream, upstreams_from_env
from runner.gateway.usage import MAX_SSE_EVENT, UsageMeter
from runner.record.models import TokenUsage
from tests.helpers import wait_for
from tests.upstreams import ScriptedUpstream

KEY = "sk-ant-guard-real-key-7f3e9a1b2c4d5e6f"
OPENAI_KEY = "sk-openai-guard-real-key-0a9b8c7d6e5f"
HEADERS = {"x-api-key": "placeholder", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def _gateway(tmp: Path, url: str, **kwargs: Any) -> ModelGateway:
    return ModelGateway(
        socket_path=tmp / "gateway.sock",
        log_path=tmp / "gateway.log",
        upstreams={"anthropic": Upstream("anthropic", url, KEY), "openai": Upstream("openai", url + "/v1", OPENAI_KEY)},
        prices=PriceTable(BUILTIN),
        **kwargs,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    with ServerThread() as thread:
        yield thread, tmp_path


def raw(sock: Path, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send `request` byte for byte (no client normalises it) and read the whole answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: g\r\nx-api-key: placeholder\r\n{extra}Connection: close\r\n\r\n".encode()


def post(target: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {target} HTTP/1.1\r\nHost: g\r\nx-api-key: p\r\nanthropic-version: 2023-06-01\r\n"
    return head.encode() + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data


# ---- exact routes ---------------------------------------------------------------------------------

ESCAPES = [
    "/v1/files", "/v1/batches/b1/results", "/v1/responses/resp_1", "/v1/models/../files",
    "/v1/models/%2e%2e/files", "/v1/models/%2E%2E%2Ffiles", "/v1/models/x%3Fafter=1", "/v1/models/x%23frag",
    "/v1/models/x/../../files", "/v1/models/", "/v1/models/.", "/v1/models/..", "//v1/models",
    "/v1//models", "/v1/models/x?limit=1%26evil", "/v1/models?evil=1", "/v1/models?limit=1&x=2",
    "/v1/models?limit=../files", "/v1/messages/../files", "/v1/messages%2f..%2ffiles", "/V1/models",
    "/v1/models/claude%00", "/v1/models/a;b", "/files", "/../v1/files", "/v1/models#x", "/v1/models/a%2fb",
    "/v1/models?beta=true%3F", "/v1/models/claude-x?beta=a/b",
]  # fmt: skip


@pytest.mark.parametrize("target", ESCAPES)
def test_a_path_off_the_route_table_never_matches(target: str) -> None:
    assert match("GET", target) is None


def test_the_routes_match_exactly_and_the_upstream_url_is_built_from_parts() -> None:
    assert match("POST", "/v1/messages?beta=true") is not None
    assert match("GET", "/v1/messages") is None and match("POST", "/v1/messages/") is None
    assert match("DELETE", "/v1/models/claude-x") is None
    got = match("GET", "/v1/models/claude-opus-4-5-20251101?beta=true")
    assert got is not None and got.path == "/v1/models/claude-opus-4-5-20251101"
    openai = parse_base_url("https://proxy.example.invalid:8443/openai/v1/")
    assert match("GET", "/v1/models/gpt-5?limit=3") is None  # a parameter the route does not take
    url = upstream_url(openai, "openai", match("GET", "/v1/models/gpt-5") or pytest.fail("no match"))
    assert str(url) == "https://proxy.example.invalid:8443/openai/v1/models/gpt-5"
    url = upstream_url(openai, "openai", match("GET", "/v1/models?limit=3&after_id=m.1") or pytest.fail("no match"))
    assert str(url) == "https://proxy.example.invalid:8443/openai/v1/models?limit=3&after_id=m.1"
    anthropic = parse_base_url("http://127.0.0.1:9")
    assert str(upstream_url(anthropic, "anthropic", match("POST", "/v1/messages?beta=true") or pytest.fail("x"))) == (
        "http://127.0.0.1:9/v1/messages?beta=true"
    )


def test_a_base_url_with_credentials_or_a_query_is_a_usage_error() -> None:
    from runner.base.errors import UsageError

    for bad in ("ftp://h", "http://u:p@h", "http://h/v1?x=1", "http://h/#f", "not a url"):
        with pytest.raises(UsageError, match="BASE_URL"):
            upstreams_from_env({"ANTHROPIC_BASE_URL": bad})
    assert upstreams_from_env({"OPENAI_BASE_URL": "http://h:1/v1"})["openai"].base_url == "http://h:1/v1"


def test_route_escapes_over_the_socket_never_reach_the_upstream(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        thread.serve(_gateway(tmp, up.url))
        answers = {target: raw(tmp / "gateway.sock", get(target)) for target in ESCAPES}
        control = raw(tmp / "gateway.sock", get("/v1/models/claude-x?beta=true"))
        listing = raw(tmp / "gateway.sock", get("/v1/models?limit=5"))
        seen = list(up.requests)
    assert {t: a[0] for t, a in answers.items()} == dict.fromkeys(ESCAPES, 404)
    assert all(a[1]["x-harness-gateway"] == "unknown-path" for a in answers.values())
    # The positive control: the exact routes do reach it, with the real key and exactly the path asked for.
    assert "x-harness-gateway" not in control[1] and listing[0] == 200  # the stand-in knows no model 'claude-x'
    assert [(s.path, s.query) for s in seen] == [("/v1/models/claude-x", "beta=true"), ("/v1/models", "limit=5")]
    assert all(s.headers["x-api-key"] == KEY for s in seen)


def test_the_upstreams_redirect_is_not_followed_with_the_key(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/v1/messages":
            raise web.HTTPFound("/stolen")
        return web.json_response({"stolen": request.headers.get("x-api-key")})

    with _Upstream(redirect) as url:
        thread.serve(_gateway(tmp, url))
        status, headers, _ = raw(tmp / "gateway.sock", post("/v1/messages", {"model": "claude-haiku-4-5"}))
    assert status == 302 and headers["location"] == "/stolen" and hits == ["/v1/messages"]


# ---- secrets in answers ---------------------------------------------------------------------------


class _Upstream:
    """A loopback aiohttp server with one catch-all handler, in its own thread."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.thread = ServerThread("test-upstream")
        self.runner: web.AppRunner | None = None

    def __enter__(self) -> str:
        self.thread.start()

        async def start() -> int:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handler)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        return f"http://127.0.0.1:{self.thread.call(start())}"

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            self.thread.call(self.runner.cleanup())
        self.thread.stop()


async def _echo(request: web.Request) -> web.StreamResponse:
    """An upstream that echoes the request's headers: in its own headers, and in SSE split mid-key."""
    seen = dict(request.headers)
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-echo": json.dumps(seen)},
                                  reason=f"OK {seen.get('X-Api-Key', '')}")  # fmt: skip
    await response.prepare(request)
    usage = {"input_tokens": 3, "output_tokens": 4}
    start = {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": usage}}
    await response.write(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": json.dumps(seen)}}
    event = b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
    cuts = sorted(event.index(key) + 7 for key in (KEY.encode(), b"user-secret-value-31337"))
    for begin, end in zip([0, *cuts], [*cuts, len(event)], strict=True):  # each secret crosses a chunk boundary
        await response.write(event[begin:end])
    end = {"type": "message_delta", "usage": {"output_tokens": 4}}
    await response.write(b"event: message_delta\ndata: " + json.dumps(end).encode() + b"\n\n")
    await response.write_eof()
    return response


def test_an_echoing_upstream_cannot_hand_the_key_back(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_echo) as url:
        gw = _gateway(tmp, url, secrets={"USER_TOKEN": "user-secret-value-31337"})
        thread.serve(gw)
        request = post("/v1/messages", {"model": "claude-haiku-4-5", "stream": True, "max_tokens": 10})
        request = request.replace(b"x-api-key: p\r\n", b"x-api-key: p\r\nx-note: user-secret-value-31337\r\n")
        status, headers, body = raw(tmp / "gateway.sock", request)
    answer = json.dumps(headers) + body.decode()
    assert status == 200
    # The trap fired: the upstream did echo what it was sent, in headers and body...
    assert "anthropic-version" in headers["x-echo"].lower() and "2023-06-01" in body.decode()
    # ...and the real key (and the user's secret) came back only as markers.
    assert KEY not in answer and "user-secret-value-31337" not in answer
    assert "[REDACTED:ANTHROPIC_API_KEY]" in body.decode() and "[REDACTED:ANTHROPIC_API_KEY]" in headers["x-echo"]
    assert "[REDACTED:USER_TOKEN]" in body.decode()
    # The SSE framing is intact and the meter still counted the stream.
    events = [block for block in body.split(b"\n\n") if block]
    assert len(events) == 3 and all(e.startswith(b"event: ") and b"\ndata: {" in e for e in events)
    assert gw.total_usage().tokens.output_tokens == 4


# ---- the budget -----------------------------------------------------------------------------------


def test_budget_reservations_hold_under_concurrency() -> None:
    async def scenario() -> tuple[int, int, float]:
        budget = Budget(cap=1.0)
        admitted = refused = 0
        release = asyncio.Event()

        async def one() -> None:
            nonlocal admitted, refused
            r = await budget.reserve(0.4)
            if r is None:
                refused += 1
                return
            admitted += 1
            await release.wait()
            budget.settle(r, 0.4)

        tasks = [asyncio.create_task(one()) for _ in range(41)]
        while admitted + refused + budget.waiting < 41:  # every task has met the budget
            await asyncio.sleep(0)
        during = admitted
        release.set()
        await asyncio.gather(*tasks)
        return during, refused, budget.spent

    during, refused, spent = asyncio.run(scenario())
    # Two fit at once; the third waits, is judged again once they settle, and runs alone (0.8 < 1.0):
    # the spend passes the cap by less than one estimate. Everyone after it is refused.
    assert during == 2 and refused == 38 and spent == pytest.approx(1.2)


def test_a_lone_request_runs_under_a_budget_smaller_than_its_estimate() -> None:
    async def scenario() -> tuple[bool, bool]:
        budget = Budget(cap=0.1)
        first = await budget.reserve(5.0)
        assert first is not None
        budget.settle(first, 0.05)
        second = await budget.reserve(5.0)
        assert second is not None
        budget.settle(second, 0.05)
        return budget.exhausted(), await budget.reserve(0.0) is None

    assert asyncio.run(scenario()) == (True, True)  # spent exactly the cap: exhausted, and refused


class _Held:
    """An upstream that holds each request until released, counting how many are in at once."""

    def __init__(self, usage: dict[str, int]) -> None:
        self.usage = usage
        self.entered = 0
        self.release: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.entered += 1
        if self.release is None:
            self.release, self.loop = asyncio.Event(), asyncio.get_running_loop()
        await self.release.wait()
        return web.json_response({"type": "message", "model": "claude-opus-4-1", "usage": self.usage})

    def release_all(self) -> None:
        """From the test's thread: let every held request (and every later one) through."""
        assert self.loop is not None and self.release is not None
        self.loop.call_soon_threadsafe(self.release.set)


def _in_thread(results: list[list[int]], sock: Path, n: int, body: dict[str, Any]) -> None:
    threading.Thread(target=lambda: results.append(_flood(sock, n, body)), daemon=True).start()


def _flood(sock: Path, n: int, body: dict[str, Any]) -> list[int]:
    async def go() -> list[int]:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock), limit=0)) as session:

            async def one() -> int:
                async with session.post("http://g/v1/messages", json=body, headers=HEADERS) as r:
                    await r.read()
                    return r.status

            return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(go())


def test_41_expensive_requests_at_once_do_not_pass_a_budget_worth_two(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    # Each costs what it may: 1000 output tokens of claude-opus-4-1 ($75/M) and a small input.
    held = _Held({"input_tokens": 100, "output_tokens": 1000})
    body = {"model": "claude-opus-4-1", "max_tokens": 1000, "messages": []}
    with _Upstream(held.handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=0.17)  # two requests' worth, and a little
        thread.serve(gw)
        results: list[list[int]] = []
        _in_thread(results, tmp / "gateway.sock", 41, body)
        try:  # two reach the upstream; the others wait for them to settle
            wait_for(lambda: held.entered == 2 and gw.budget.waiting == 39, what="two upstream, 39 waiting")
            entered_while_held = held.entered
        finally:
            held.release_all()
        wait_for(lambda: results, what="the flood's answers")
    statuses = results[0]
    assert entered_while_held == 2  # the third waited for the first two to settle
    assert held.entered == 3 and statuses.count(200) == 3 and statuses.count(403) == 38
    cost = (100 * 15 + 1000 * 75) / 1e6  # the settled cost of each, at opus-4-1's prices
    assert gw.spent_usd() == pytest.approx(3 * cost) and gw.spent_usd() - 0.17 < cost  # over by less than one


def test_without_a_budget_the_same_flood_all_goes_through(served: tuple[ServerThread, Path]) -> None:
    """The positive control of the test above: nothing but the budget held those requests back."""
    thread, tmp = served
    held = _Held({"input_tokens": 100, "output_tokens": 1000})
    with _Upstream(held.handle) as url:
        thread.serve(_gateway(tmp, url))
        results: list[list[int]] = []
        body = {"model": "claude-opus-4-1", "max_tokens": 1000}
        _in_thread(results, tmp / "gateway.sock", 41, body)
        try:
            wait_for(lambda: held.entered == 32, what="32 requests upstream at once")  # MAX_ACTIVE
        finally:
            held.release_all()
        wait_for(lambda: results, what="the flood's answers")
    assert results[0] == [200] * 41


def test_a_client_that_hangs_up_before_the_usage_is_charged_its_reservation(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    sent = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {"type": "message_start", "message": {"model": "claude-opus-4-1", "usage": {"input_tokens": 10}}}
        await response.write(b"data: " + json.dumps(start).encode() + b"\n\n")
        sent.set()
        for _ in range(600):  # the final usage would come much later; the client does not wait
            await asyncio.sleep(0.05)
            await response.write(b": keep-alive\n\n")
        return response

    with _Upstream(slow_stream) as url:
        gw = _gateway(tmp, url, max_cost_usd=100.0)
        thread.serve(gw)
        request = post("/v1/messages", {"model": "claude-opus-4-1", "max_tokens": 2000, "stream": True})
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp / "gateway.sock"))
            s.sendall(request)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        wait_for(lambda: gw.total_usage().requests == 1, what="the cut request to be counted")
    estimate = (len(request.partition(b"\r\n\r\n")[2]) * 18.75 + 2000 * 75) / 1e6
    assert gw.spent_usd() == pytest.approx(estimate)  # not the $0.00015 of the input it saw
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[-1])
    assert line["error"] and line["costUsd"] == pytest.approx(estimate, abs=1e-6)


def test_an_error_answer_is_not_charged_and_a_json_answer_is_metered_when_stream_was_asked(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    calls: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error"}}, status=400)
        # A JSON answer although the request said stream: the content type decides how it is read.
        usage = {"input_tokens": 1000, "output_tokens": 500}
        return web.json_response({"type": "message", "model": "claude-sonnet-4-5", "usage": usage})

    with _Upstream(answer) as url:
        gw = _gateway(tmp, url, max_cost_usd=50.0)
        thread.serve(gw)
        body = {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 100_000}
        first = raw(tmp / "gateway.sock", post("/v1/messages", body))
        assert gw.spent_usd() == 0.0 and first[0] == 400
        second = raw(tmp / "gateway.sock", post("/v1/messages", body))
    assert second[0] == 200
    assert gw.total_usage().tokens == TokenUsage(input_tokens=1000, output_tokens=500)
    assert gw.spent_usd() == pytest.approx((1000 * 3 + 500 * 15) / 1e6)


def test_the_estimate_reads_the_output_cap_of_each_api() -> None:
    assert output_tokens_asked("messages", {"max_tokens": 123}) == 123
    assert output_tokens_asked("chat", {"max_completion_tokens": 7, "max_tokens": 9}) == 7
    assert output_tokens_asked("chat", {"max_tokens": 9}) == 9
    assert output_tokens_asked("responses", {"max_output_tokens": 55}) == 55
    for bad in ({}, {"max_tokens": True}, {"max_tokens": -1}, {"max_tokens": "9"}, {"max_tokens": 10**12}):
        assert output_tokens_asked("messages", bad) == MAX_OUTPUT_TOKENS


# ---- prices ---------------------------------------------------------------------------------------


def test_prices_match_exactly_or_by_documented_alias_never_by_prefix() -> None:
    table = PriceTable(BUILTIN)
    assert canonical_model("Anthropic/claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert canonical_model("gpt-5-2025-08-07") == "gpt-5" and canonical_model("o3-latest") == "o3"
    assert table.lookup("gpt-5-pro", "openai") == (BUILTIN["gpt-5-pro"], True)
    # A namesake is not its cheaper sibling: unknown, charged at the provider's dearest row.
    price, known = table.lookup("gpt-5-ultra", "openai")
    assert not known and price == max((p for k, p in BUILTIN.items() if not k.startswith("claude")),
                                       key=lambda p: (p.output, p.input))  # fmt: skip
    assert table.lookup("claude-sonnet-4-5-turbo", "anthropic")[1] is False
    assert table.lookup("claude-opus-4-1-20250805", "anthropic") == (BUILTIN["claude-opus-4-1"], True)


# ---- the meter ------------------------------------------------------------------------------------


def test_an_over_long_sse_event_is_skipped_and_the_meter_goes_on() -> None:
    meter = UsageMeter("messages", streaming=True, request_model="m")
    meter.feed(b'data: {"type":"content_block_delta","x":"' + b"a" * (MAX_SSE_EVENT + 10))
    meter.feed(b"a" * 1000 + b'"}\n\n')
    end = {"type": "message_delta", "usage": {"input_tokens": 5, "output_tokens": 9}}
    meter.feed(b"data: " + json.dumps(end).encode() + b"\n\n")
    meter.finish()
    assert meter.final and meter.usage == TokenUsage(input_tokens=5, output_tokens=9)


def test_the_meter_knows_when_the_closing_usage_arrived() -> None:
    start = UsageMeter("messages", streaming=True, request_model=None)
    start.feed(b'data: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n')
    start.finish()
    assert start.seen and not start.final
    created = UsageMeter("responses", streaming=True, request_model=None)
    created.feed(b'data: {"type":"response.created","response":{"usage":null}}\n\n')
    created.finish()
    assert not created.final
    done = UsageMeter("chat", streaming=False, request_model=None)
    done.feed(b'{"usage":{"prompt_tokens":3,"completion_tokens":2}}')
    done.finish()
    assert done.final and done.usage == TokenUsage(input_tokens=3, output_tokens=2)


# ---- bounded connections --------------------------------------------------------------------------


def test_connections_past_the_cap_wait_unaccepted_and_are_served_once_room_frees(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        gw = _gateway(tmp, up.url, max_connections=8)
        thread.serve(gw)
        held = []
        for _ in range(8):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(tmp / "gateway.sock"))
            held.append(s)
        wait_for(lambda: gw.open_connections == 8, what="eight open connections")
        with socket.socket(socket.AF_UNIX) as ninth:
            ninth.connect(str(tmp / "gateway.sock"))  # queued by the kernel: connect succeeds
            ninth.sendall(get("/v1/models"))
            ninth.settimeout(0.5)
            with pytest.raises(TimeoutError):  # ...but nothing answers while the cap is reached
                ninth.recv(1)
            assert gw.open_connections == 8 and gw.times_at_cap == 1 and not up.requests
            for s in held:
                s.close()
            ninth.settimeout(10)
            answer = ninth.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and len(up.seen("/v1/models")) == 1
    log = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    assert log[0]["refused"] == "connection-cap" and log[0]["openConnections"] == 8


def test_a_slow_request_head_is_cut_at_the_header_timeout(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        gw = _gateway(tmp, up.url, header_timeout=1.0)
        thread.serve(gw)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp / "gateway.sock"))
            started = time.monotonic()
            s.settimeout(0.2)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: g\r\nX-Slow: ")
            closed = False
            while time.monotonic() - started < 10 and not closed:  # a byte at a time, never the whole head
                try:
                    s.sendall(b"a")
                    closed = s.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
            elapsed = time.monotonic() - started
        wait_for(lambda: gw.open_connections == 0, what="the gateway to drop the connection")
    assert closed and 0.9 < elapsed < 5 and not up.requests


def test_a_body_over_the_limit_is_refused_while_it_arrives(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        thread.serve(_gateway(tmp, up.url, max_body_bytes=1024, body_timeout=2.0))
        chunked = (b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   + b"400\r\n" + b"a" * 1024 + b"\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n")  # never ends  # fmt: skip
        too_big = raw(tmp / "gateway.sock", chunked)
        slow = raw(tmp / "gateway.sock", b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n{")
        declared = raw(tmp / "gateway.sock", b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nContent-Length: 5000\r\n\r\n")
    assert too_big[0] == 413 and slow[0] == 408 and declared[0] == 413
    assert not up.requests


def test_the_supervisor_raises_its_open_file_limit(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import resource; from runner.base.fdlimit import raise_open_file_limit as r; "
            "soft = lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0]; print(soft(), r(), soft())")  # fmt: skip
    out = subprocess.run(["prlimit", "--nofile=64:4096", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["64", "4096", "4096"]


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("size", [1, 7, 333, 1 << 20])
def test_the_meter_reads_the_same_usage_however_the_stream_is_cut(size: int, crlf: bool) -> None:
    start = {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 11}}}
    text = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "no tokens here " * 9}}
    stream = b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
    stream += (b"event: content_block_delta\ndata: " + json.dumps(text).encode() + b"\n\n") * 50
    # The closing usage in an event of two data lines (joined by a newline, as SSE says).
    stream += b'event: message_delta\ndata: {"type": "message_delta",\ndata: "usage": {"output_tokens": 13}}\n\n'
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    meter = UsageMeter("messages", streaming=True, request_model="asked-for")
    for at in range(0, len(stream), size):
        meter.feed(stream[at : at + size])
    meter.finish()
    assert meter.final and meter.model == "claude-haiku-4-5"
    assert meter.usage == TokenUsage(input_tokens=11, output_tokens=13)


def test_headers_the_agent_names_in_connection_do_not_reach_the_upstream(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        thread.serve(_gateway(tmp, up.url))
        request = get("/v1/models", extra="x-hop: secret-hop\r\nx-kept: kept\r\n").replace(
            b"Connection: close", b"Connection: close, X-Hop"
        )
        status, _, _ = raw(tmp / "gateway.sock", request)
        seen = up.seen("/v1/models")
    assert status == 200 and len(seen) == 1
    assert "x-hop" not in seen[0].headers and seen[0].headers["x-kept"] == "kept"  # the control passes


def test_max_tokens_is_counted_and_refuses_once_spent(served: tuple[ServerThread, Path]) -> None:
    """A subscriber's budget in tokens: each answer's reported total is counted, and once the total reaches
    --max-tokens the next request is refused without reaching the upstream (dollars are not capped here)."""
    thread, tmp = served
    calls: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(1)
        usage = {"input_tokens": 600, "output_tokens": 300, "cache_read_input_tokens": 100}
        return web.json_response({"type": "message", "model": "claude-sonnet-4-5", "usage": usage})

    body = {"model": "claude-sonnet-4-5", "max_tokens": 1000}
    with _Upstream(answer) as url:
        gw = _gateway(tmp, url, max_tokens=1500)
        thread.serve(gw)
        statuses = [raw(tmp / "gateway.sock", post("/v1/messages", body))[0] for _ in range(3)]
        refused = raw(tmp / "gateway.sock", post("/v1/messages", body))
    assert statuses == [200, 200, 403] and len(calls) == 2  # 1000 counted, then 2000: the third never left
    assert b"--max-tokens of 1,500 tokens is spent" in refused[2]
    usage = gw.total_usage()
    assert (usage.budget_tokens, usage.refused_budget, usage.refused_tokens) == (2000, 2, 2)
    assert gw.budget_spent() and gw.spent_usd() > 0  # the dollars are still counted


def test_without_max_tokens_the_same_requests_all_pass(served: tuple[ServerThread, Path]) -> None:
    """Control for the test above: no token cap, no refusal."""
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        usage = {"input_tokens": 600, "output_tokens": 300, "cache_read_input_tokens": 100}
        return web.json_response({"type": "message", "model": "claude-sonnet-4-5", "usage": usage})

    with _Upstream(answer) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        statuses = [
            raw(tmp / "gateway.sock", post("/v1/messages", {"model": "claude-sonnet-4-5"}))[0] for _ in range(4)
        ]
    assert statuses == [200] * 4 and gw.total_usage().budget_tokens == 4000 and not gw.budget_spent()


def test_a_subscription_is_not_billed_in_dollars_but_its_tokens_count(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        usage = {"input_tokens": 600, "output_tokens": 300}
        return web.json_response({"type": "message", "model": "claude-sonnet-4-5", "usage": usage})

    with _Upstream(answer) as url:
        subscription = Upstream("anthropic", url, "sk-ant-oat01-sub", "subscription", "CLAUDE_CODE_OAUTH_TOKEN")
        gw = ModelGateway(socket_path=tmp / "gateway.sock", log_path=tmp / "gateway.log", prices=PriceTable(BUILTIN),
                          upstreams={"anthropic": subscription}, max_cost_usd=0.000001)  # fmt: skip
        thread.serve(gw)
        statuses = [
            raw(tmp / "gateway.sock", post("/v1/messages", {"model": "claude-sonnet-4-5"}))[0] for _ in range(3)
        ]
    usage = gw.total_usage()
    assert statuses == [200] * 3 and usage.cost_usd == 0.0 and gw.spent_usd() == 0.0  # a tiny --max-cost never bites
    assert usage.budget_tokens == 2700 and usage.tokens.output_tokens == 900
