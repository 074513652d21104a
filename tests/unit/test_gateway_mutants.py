"""The model gateway's behaviours that mutation testing found unpinned (issue 16, "Tests that would notice").

Each test names the behaviour it holds: which headers never cross, where the budget's edges are, how a
non-streamed answer is metered, the journal file's mode, the price table's files, the run's network
wiring. How the score is measured: docs/security.md, "Mutation score: model gateway".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from runner.base.errors import UsageError
from runner.gateway.budget import Budget
from runner.gateway.loop import ServerThread, bind_unix_socket
from runner.gateway.model import (
    MAX_CONNECTIONS,
    MAX_OUTPUT_TOKENS,
    ModelGateway,
    output_tokens_asked,
    parse_retry_after,
)
from runner.gateway.prices import BUILTIN, Price, PriceTable, _p, canonical_model, load_prices
from runner.gateway.services import (
    PROXY_URL,
    RunNetwork,
    Wiring,
    gateway_max_connections,
    parse_allow_hosts,
)
from runner.gateway.upstreams import ANTHROPIC_DEFAULT, OPENAI_DEFAULT, Upstream, secret_keys, upstreams_from_env
from runner.gateway.usage import MAX_JSON_BODY, MAX_SSE_EVENT, UsageMeter
from runner.record.journal import EGRESS_LOG, GATEWAY_LOG
from runner.record.models import AgentInfo, Limits, RunSummary, TokenUsage, WorktreeInfo
from tests.helpers import wait_for
from tests.unit.test_gateway_guards import KEY, OPENAI_KEY, _gateway, _Held, _Upstream, get, raw


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    with ServerThread() as thread:
        yield thread, tmp_path


# ---- what crosses the gateway ---------------------------------------------------------------------


class _Recorder:
    """An upstream that records each request's headers (every value of each) and answers `answer`."""

    def __init__(self, answer: dict[str, Any] | None = None, content_type: str = "application/json") -> None:
        self.seen: list[tuple[str, CIMultiDict[str]]] = []
        self.bodies: list[bytes] = []
        self.answer = answer if answer is not None else {"type": "message", "model": "claude-haiku-4-5", "usage": {}}
        self.content_type = content_type

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, CIMultiDict(request.headers)))
        self.bodies.append(await request.read())
        return web.Response(body=json.dumps(self.answer).encode(), content_type=self.content_type)


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


AGENT_CREDENTIALS = [
    ("Host", "evil.example.invalid:4443"),
    ("X-Api-Key", "agent-placeholder"),
    ("Authorization", "Bearer agent-token"),
    ("Api-Key", "agent-azure-key"),
    ("Cookie", "session=agent-cookie"),
    ("Proxy-Authorization", "Basic YWdlbnQ6cHc="),
    ("Proxy-Connection", "keep-alive"),
    ("Accept-Encoding", "gzip, br"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Agent-Trailer"),
    ("Upgrade", "h2c"),
    ("X-Passed-Through", "kept"),
]


def test_no_credential_of_the_agent_nor_its_host_reaches_the_upstream(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    recorder = _Recorder()
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 5}).encode()
    with _Upstream(recorder.handle) as url:
        thread.serve(_gateway(tmp, url))
        anthropic = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", AGENT_CREDENTIALS, body))
        openai = raw(tmp / "gateway.sock", _request("POST", "/v1/responses", AGENT_CREDENTIALS, b'{"model":"o3"}'))
        listing = raw(tmp / "gateway.sock", _request("GET", "/v1/models", AGENT_CREDENTIALS))
    assert (anthropic[0], openai[0], listing[0]) == (200, 200, 200)
    upstream_host = url.removeprefix("http://")
    (_, to_anthropic), (_, to_openai), (_, to_listing) = recorder.seen
    # Exactly one credential each, the real one, in the provider's own header.
    assert to_anthropic.getall("x-api-key") == [KEY] and "authorization" not in to_anthropic
    assert to_openai.getall("authorization") == [f"Bearer {OPENAI_KEY}"] and "x-api-key" not in to_openai
    # GET /v1/models is the agent's guess from its headers: x-api-key says Anthropic.
    assert to_listing.getall("x-api-key") == [KEY] and "authorization" not in to_listing
    for headers in (to_anthropic, to_openai, to_listing):
        assert headers.getall("host") == [upstream_host]  # the upstream's own name, never the agent's
        for name in ("api-key", "cookie", "proxy-authorization", "proxy-connection", "connection", "keep-alive", "te",
                     "trailer", "upgrade"):  # fmt: skip
            assert name not in headers, name
        assert headers.getall("accept-encoding") == ["identity"]
        assert headers["x-passed-through"] == "kept"  # the positive control: other headers pass untouched
        assert "agent" not in json.dumps(list(headers.items())).lower().replace("user-agent", "")


def test_a_chunked_request_reaches_the_upstream_framed_anew(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder()
    body = b'{"model": "claude-haiku-4-5"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with _Upstream(recorder.handle) as url:
        thread.serve(_gateway(tmp, url))
        head = b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        status, _, _ = raw(tmp / "gateway.sock", head + chunked)
    assert status == 200 and recorder.bodies == [body]
    headers = recorder.seen[0][1]
    assert "transfer-encoding" not in headers and headers.getall("content-length") == [str(len(body))]


def test_the_hosts_proxy_settings_are_not_used_for_the_upstream(
    served: tuple[ServerThread, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, tmp = served
    upstream, proxy = _Recorder({"from": "upstream"}), _Recorder({"from": "proxy"})
    with _Upstream(upstream.handle) as url, _Upstream(proxy.handle) as proxy_url:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        thread.serve(_gateway(tmp, url))
        status, _, body = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and json.loads(body) == {"from": "upstream"} and not proxy.seen


def test_a_compressed_answer_reaches_the_agent_decoded_and_is_metered(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    answer = {"type": "message", "model": "claude-haiku-4-5", "usage": {"input_tokens": 7, "output_tokens": 3}}

    async def gzipped(request: web.Request) -> web.Response:
        import gzip

        return web.Response(body=gzip.compress(json.dumps(answer).encode()), content_type="application/json",
                            headers={"content-encoding": "gzip"})  # fmt: skip

    with _Upstream(gzipped) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        status, headers, body = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and json.loads(body) == answer and "content-encoding" not in headers
    assert gw.total_usage().tokens == TokenUsage(input_tokens=7, output_tokens=3)


def _whole(sock: Path, request: bytes) -> bytes:
    """Every byte the gateway sends back on one connection, until it closes it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_one_answer_per_request_with_the_upstreams_reason_and_no_error_logged(
    served: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture
) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        usage = {"input_tokens": 1, "output_tokens": 1}
        return web.json_response({"type": "message", "usage": usage}, reason=f"Fine {KEY}")

    with _Upstream(answer) as url:
        thread.serve(_gateway(tmp, url, max_cost_usd=10.0))
        with caplog.at_level(logging.ERROR):
            data = _whole(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert data.startswith(b"HTTP/1.1 200 Fine [REDACTED:ANTHROPIC_API_KEY]\r\n")
    assert data.count(b"HTTP/1.1 ") == 1 and data.endswith(b"\r\n0\r\n\r\n")  # the chunked answer, nothing after
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_tail_that_could_start_a_secret_is_released_at_the_end(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    tail = KEY[:12].encode()  # held back by the redactor until it knows the key does not follow

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b'{"type": "message"} ' + tail, content_type="text/plain")

    with _Upstream(answer) as url:
        thread.serve(_gateway(tmp, url))
        status, _, body = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and body == b'{"type": "message"} ' + tail


def test_a_stream_cut_by_the_upstream_is_charged_its_reservation_and_logged_with_what_arrived(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "retry-after": "5"})
        await response.prepare(request)
        start = {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 10}}}
        await response.write(b"data: " + json.dumps(start).encode() + b"\n\n")
        assert request.transport is not None
        request.transport.close()  # gone before the closing usage
        return response

    body = b'{"model": "claude-haiku-4-5", "max_tokens": 100, "stream": true}'
    with _Upstream(cut) as url:
        gw = _gateway(tmp, url, max_cost_usd=10.0)
        thread.serve(gw)
        raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], body))
        wait_for(lambda: gw.total_usage().requests == 1, what="the cut request to be counted")
    estimate = (len(body) * 1.25 + 100 * 5) / 1e6
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[-1])
    assert line["error"] == "ClientPayloadError" and line["inputTokens"] == 10 and line["retryAfter"] == 5.0
    assert line["status"] == 200 and gw.spent_usd() == pytest.approx(estimate) and gw.budget.reserved == 0.0
    assert line["provider"] == "anthropic"


def test_an_upstream_that_hangs_up_before_answering_is_charged_the_reservation(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def hang_up() -> None:  # reads the request, which may have reached the provider, then answers nothing
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)

    threading.Thread(target=hang_up, daemon=True).start()
    body = b'{"model": "claude-haiku-4-5", "max_tokens": 100}'
    try:
        gw = _gateway(tmp, f"http://127.0.0.1:{listener.getsockname()[1]}", max_cost_usd=10.0)
        thread.serve(gw)
        status, _, _ = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], body))
    finally:
        listener.close()
    estimate = (len(body) * 1.25 + 100 * 5) / 1e6
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[-1])
    assert status == 502 and line["status"] == 502 and line["error"] == "ServerDisconnectedError"
    assert gw.spent_usd() == pytest.approx(estimate) and line["costUsd"] == pytest.approx(estimate, abs=1e-6)


def test_the_tls_context_given_is_the_one_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from tests.unit.test_gateway import _self_signed

    monkeypatch.delenv("HARNESS_EXTRA_CA_CERTS", raising=False)
    cert, key = _self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))  # trusts the stand-in; the system's trust does not
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"type": "message", "usage": {}})

    upstream = ServerThread("tls-upstream")
    upstream.start()
    runner = web.AppRunner(web.Application())

    async def serve() -> int:
        runner.app.router.add_post("/v1/messages", answer)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
        return int(runner.addresses[0][1])

    try:
        port = upstream.call(serve())
        with ServerThread() as thread:
            gw = _gateway(tmp_path, f"https://127.0.0.1:{port}", ssl_context=trusting)
            thread.serve(gw)
            status, _, _ = raw(tmp_path / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    finally:
        upstream.call(runner.cleanup())
        upstream.stop()
    assert status == 200


def test_a_gateway_never_started_closes_quietly_and_logs_iteration_zero_until_told(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, "http://127.0.0.1:9")
    asyncio.run(gw.close())  # nothing to close: no error
    assert not (tmp_path / "gateway.log").exists()
    with ServerThread() as thread:
        thread.serve(gw)
        raw(tmp_path / "gateway.sock", get("/v1/files"))
    assert json.loads((tmp_path / "gateway.log").read_text())["iteration"] == 0


def test_without_a_key_on_the_host_the_agents_credential_is_still_dropped(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder()
    with _Upstream(recorder.handle) as url:
        gw = ModelGateway(socket_path=tmp / "gateway.sock", log_path=tmp / "gateway.log",
                          upstreams={"anthropic": Upstream("anthropic", url, None),
                                     "openai": Upstream("openai", url + "/v1", "")},
                          prices=PriceTable(BUILTIN))  # fmt: skip
        thread.serve(gw)
        raw(tmp / "gateway.sock", _request("POST", "/v1/messages", AGENT_CREDENTIALS, b"{}"))
        raw(tmp / "gateway.sock", _request("POST", "/v1/chat/completions", AGENT_CREDENTIALS, b"{}"))
    for _, headers in recorder.seen:
        assert "x-api-key" not in headers and "authorization" not in headers and "cookie" not in headers


def test_the_answers_own_framing_and_cookies_are_not_passed_back(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        hop_by_hop = {"keep-alive": "timeout=99", "trailer": "x-upstream-trailer", "upgrade": "h2c"}
        response = web.json_response({"type": "message", "usage": {}}, headers={"x-request-id": "req_1", **hop_by_hop})
        response.set_cookie("upstream-session", "s3cr3t")
        return response

    with _Upstream(answer) as url:
        thread.serve(_gateway(tmp, url))
        status, headers, body = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and json.loads(body)["type"] == "message"
    assert "set-cookie" not in headers and headers["x-request-id"] == "req_1"
    assert not {"keep-alive", "trailer", "upgrade"} & set(headers) and headers["connection"] == "close"


def test_an_http_1_0_agent_gets_the_answer_without_the_upstreams_framing(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json", "connection": "x-upstream-hop"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"type": "message", ')
        await response.write(b'"usage": {"output_tokens": 2}}')
        await response.write_eof()
        return response

    with _Upstream(streamed) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        request = b"POST /v1/messages HTTP/1.0\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}"
        status, headers, body = raw(tmp / "gateway.sock", request)
    # Read to the end of the connection, as HTTP/1.0 does: no chunk framing, no hop-by-hop header of the upstream.
    assert status == 200 and json.loads(body) == {"type": "message", "usage": {"output_tokens": 2}}
    assert "transfer-encoding" not in headers and headers.get("connection") != "x-upstream-hop"
    assert gw.total_usage().tokens.output_tokens == 2


def test_a_header_whose_name_carries_a_secret_is_not_passed_back(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"usage": {}}, headers={f"x-{KEY}": "1", "x-plain": KEY})

    with _Upstream(answer) as url:
        thread.serve(_gateway(tmp, url))
        status, headers, _ = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and not any(KEY.lower() in name for name in headers)
    assert headers["x-plain"] == "[REDACTED:ANTHROPIC_API_KEY]"


def test_the_chat_usage_option_is_added_only_when_missing(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder({"model": "gpt-4.1", "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    bodies = [
        {"model": "gpt-4.1", "stream": True, "stream_options": {"other": 1}},
        {"model": "gpt-4.1", "stream": True, "stream_options": {"include_usage": True, "other": 2}},
        {"model": "gpt-4.1", "stream": True, "stream_options": "junk"},
        {"model": "gpt-4.1", "stream": False},
        {"model": "gpt-4.1", "stream": "yes"},
    ]
    with _Upstream(recorder.handle) as url:
        thread.serve(_gateway(tmp, url))
        for b in bodies:
            data = json.dumps(b, separators=(",", ":")).encode()  # compact: a body rewritten would show it
            assert raw(tmp / "gateway.sock", _request("POST", "/v1/chat/completions", [("Host", "g")], data))[0] == 200
    sent = [json.loads(b) for b in recorder.bodies]
    assert sent[0]["stream_options"] == {"other": 1, "include_usage": True}
    # Already asked: the body is passed byte for byte as it came.
    assert recorder.bodies[1] == json.dumps(bodies[1], separators=(",", ":")).encode()
    assert sent[2]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in sent[3] and "stream_options" not in sent[4]


def test_a_route_both_providers_have_goes_where_the_agents_headers_point(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder({"data": []})
    with _Upstream(recorder.handle) as url:
        thread.serve(_gateway(tmp, url))
        for headers in ([("Host", "g"), ("Authorization", "Bearer p")], [("Host", "g"), ("Anthropic-Version", "1")],
                        [("Host", "g"), ("X-Api-Key", "p")], [("Host", "g")]):  # fmt: skip
            assert raw(tmp / "gateway.sock", _request("GET", "/v1/models", headers))[0] == 200
        unknown = [
            raw(tmp / "gateway.sock", _request("GET", "/v1/files", h))
            for h in ([("Host", "g")], [("Host", "g"), ("Anthropic-Version", "1")])
        ]
    # OpenAI's base URL carries /v1 (the stand-in's path is the same either way); its key says who was asked.
    credentials = [("x-api-key" in h, h.get("authorization")) for _, h in recorder.seen]
    assert credentials == [(False, f"Bearer {OPENAI_KEY}"), (True, None), (True, None), (False, f"Bearer {OPENAI_KEY}")]
    assert [r[0] for r in unknown] == [404, 404]
    assert "code" in json.loads(unknown[0][2])["error"] and json.loads(unknown[1][2])["type"] == "error"


def test_a_refusal_is_json_in_the_providers_format_and_logged_with_its_path(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        gw.begin_iteration(3)
        long = "/v1/" + "x" * 300
        openai = raw(tmp / "gateway.sock", _request("POST", long, [("Host", "g")], b"{}"))
        anthropic = raw(tmp / "gateway.sock", _request("GET", "/v1/files", [("Host", "g"), ("X-Api-Key", "p")]))
    assert openai[0] == 404 and openai[1]["content-type"] == "application/json"
    body = json.loads(openai[2])
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["type"] == body["error"]["code"] == "not_found_error"
    assert (
        json.loads(anthropic[2])["error"]["type"] == "not_found_error" and json.loads(anthropic[2])["type"] == "error"
    )
    lines = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    assert lines[0] == {"ts": lines[0]["ts"], "iteration": 3, "method": "POST", "path": long[:200],
                        "provider": "openai", "status": 404, "refused": "unknown-path"}  # fmt: skip
    assert lines[1]["provider"] == "anthropic" and lines[1]["method"] == "GET"


def test_a_forwarded_requests_journal_line_has_every_field(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(0.25)  # the stand-in's own latency, which the line reports
        usage = {"input_tokens": 1234, "output_tokens": 567, "cache_read_input_tokens": 89,
                 "cache_creation_input_tokens": 10}  # fmt: skip
        return web.json_response({"type": "message", "model": "claude-haiku-4-5", "usage": usage})

    with _Upstream(answer) as url:
        gw = _gateway(tmp, url, max_cost_usd=10.0, spent_before_usd=0.5)
        thread.serve(gw)
        gw.begin_iteration(9)
        raw(tmp / "gateway.sock", _request("POST", "/v1/messages?beta=true", [("Host", "g")], b'{"model":"m"}'))
    cost = (1234 * 1 + 567 * 5 + 89 * 0.1 + 10 * 1.25) / 1e6  # 0.0040889: six decimals in the journal
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[0])
    assert 250 <= line["latencyMs"] < 10_000
    assert line == {
        "ts": line["ts"], "iteration": 9, "method": "POST", "path": "/v1/messages", "provider": "anthropic",
        "api": "messages", "model": "claude-haiku-4-5", "status": 200, "inputTokens": 1234, "outputTokens": 567,
        "cacheReadTokens": 89, "cacheWriteTokens": 10, "costUsd": round(cost, 6), "priced": True,
        "spentUsd": round(0.5 + cost, 6), "latencyMs": line["latencyMs"], "retryAfter": None, "error": None,
    }  # fmt: skip
    assert gw.total_usage().cost_usd == round(cost, 6)


def test_a_request_past_the_waiting_room_is_refused_at_once_and_its_connection_closed(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    held = _Held({"input_tokens": 1, "output_tokens": 1})
    with _Upstream(held.handle) as url:
        gw = _gateway(tmp, url, max_active=1, max_waiting=1)
        thread.serve(gw)
        gw.begin_iteration(5)
        # A request refused while reading its body leaves the count of requests in hand where it was.
        assert raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"["))[0] == 400
        first: list[tuple[int, dict[str, str], bytes]] = []
        request = _request("POST", "/v1/messages", [("Host", "g"), ("Anthropic-Version", "1")], b"{}")
        for _ in range(2):  # one upstream, one waiting for it
            threading.Thread(target=lambda: first.append(raw(tmp / "gateway.sock", request)), daemon=True).start()
        try:
            wait_for(lambda: held.entered == 1 and gw._pending == 2, what="one request upstream, one waiting")
            refused = raw(tmp / "gateway.sock", request)  # raw() reads until the gateway closes the connection
        finally:
            held.release_all()
        wait_for(lambda: len(first) == 2, what="the held requests' answers")
    assert [f[0] for f in first] == [200, 200] and refused[0] == 503
    assert refused[1]["x-harness-gateway"] == "too-many-requests"
    error = json.loads(refused[2])
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert "too many requests at once" in error["error"]["message"]
    lines = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    assert {"iteration": 5, "refused": "too-many-requests", "status": 503, "provider": "anthropic"}.items() <= (
        lines[1].items()
    )
    assert held.entered == 2


def test_bad_bodies_are_refused_in_the_providers_format_and_logged(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        thread.serve(_gateway(tmp, url, max_body_bytes=1024, body_timeout=0.5))
        sock = tmp / "gateway.sock"
        too_large = raw(sock, b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nContent-Length: 5000\r\n\r\n")
        too_slow = raw(sock, b"POST /v1/messages HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\n{")
        not_json = raw(sock, _request("POST", "/v1/messages", [("Host", "g")], b"[1]"))
        chat = raw(sock, _request("POST", "/v1/chat/completions", [("Host", "g")], b"nope"))
    expected = [(413, "body-too-large", "request_too_large"), (408, "body-timeout", "invalid_request_error"),
                (400, "malformed-json", "invalid_request_error")]  # fmt: skip
    for (status, headers, body), (code, reason, kind) in zip((too_large, too_slow, not_json), expected, strict=True):
        error = json.loads(body)
        assert (status, headers["x-harness-gateway"]) == (code, reason)
        assert error["type"] == "error" and error["error"]["type"] == kind  # Anthropic's format on its route
    assert chat[0] == 400 and json.loads(chat[2])["error"]["code"] == "invalid_request_error"  # OpenAI's on its
    assert "not a JSON object" in json.loads(not_json[2])["error"]["message"]
    logged = [(line["status"], line["refused"], line["provider"])
              for line in map(json.loads, (tmp / "gateway.log").read_text().splitlines())]  # fmt: skip
    assert logged == [(413, "body-too-large", "anthropic"), (408, "body-timeout", "anthropic"),
                      (400, "malformed-json", "anthropic"), (400, "malformed-json", "openai")]  # fmt: skip


def test_a_spent_budget_refuses_each_request_in_its_providers_terms(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=1.0, spent_before_usd=1.0)
        thread.serve(gw)
        answers = [raw(tmp / "gateway.sock", _request("POST", path, [("Host", "g")], b"{}"))
                   for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages")]  # fmt: skip
    assert [a[0] for a in answers] == [403] * 3 and all(a[1]["x-harness-gateway"] == "budget" for a in answers)
    openai, _, anthropic = (json.loads(a[2]) for a in answers)
    assert openai["error"]["code"] == "budget_exceeded" and "do not retry" in openai["error"]["message"]
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "permission_error"
    assert gw.total_usage().refused_budget == 3


def test_a_large_body_reaches_the_upstream_whole(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder()
    body = json.dumps({"model": "claude-haiku-4-5", "messages": [{"content": "x" * 600_000}]}).encode()
    with _Upstream(recorder.handle) as url:
        thread.serve(_gateway(tmp, url, max_body_bytes=len(body)))  # exactly the limit: still accepted
        status, _, _ = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], body))
    assert status == 200 and recorder.bodies == [body]


def test_a_get_route_forwards_no_body_and_needs_none(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder({"data": []})
    with _Upstream(recorder.handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=0.000001, spent_before_usd=1.0)  # spent: yet listing is free
        thread.serve(gw)
        status, _, body = raw(tmp / "gateway.sock", get("/v1/models/claude-haiku-4-5?beta=true"))
    assert status == 200 and json.loads(body) == {"data": []}
    assert recorder.seen[0][0] == "/v1/models/claude-haiku-4-5?beta=true" and recorder.bodies == [b""]
    assert gw.total_usage().requests == 1 and gw.total_usage().refused_budget == 0


# ---- non-streamed answers are metered --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "answer", "tokens", "cost"),
    [
        ("/v1/messages", {"type": "message", "model": "claude-haiku-4-5-20251001",
                          "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 5000,
                                    "cache_creation_input_tokens": 100}},
         TokenUsage(input_tokens=1000, output_tokens=200, cache_read_tokens=5000, cache_write_tokens=100),
         (1000 * 1 + 200 * 5 + 5000 * 0.1 + 100 * 1.25) / 1e6),
        ("/v1/responses", {"object": "response", "model": "gpt-5-mini-2025-08-07",
                           "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400},
                                     "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 100}}},
         TokenUsage(input_tokens=600, cache_read_tokens=400, output_tokens=300, reasoning_tokens=100),
         (600 * 0.25 + 400 * 0.025 + 300 * 2) / 1e6),
        ("/v1/chat/completions", {"object": "chat.completion", "model": "gpt-4o-mini",
                                  "usage": {"prompt_tokens": 900, "completion_tokens": 50,
                                            "prompt_tokens_details": {"cached_tokens": 100},
                                            "completion_tokens_details": {"reasoning_tokens": 7}}},
         TokenUsage(input_tokens=800, cache_read_tokens=100, output_tokens=50, reasoning_tokens=7),
         (800 * 0.15 + 100 * 0.075 + 50 * 0.6) / 1e6),
    ],
)  # fmt: skip
def test_a_json_answer_is_metered_and_charged(
    served: tuple[ServerThread, Path], path: str, answer: dict[str, Any], tokens: TokenUsage, cost: float
) -> None:
    thread, tmp = served
    recorder = _Recorder(answer)
    with _Upstream(recorder.handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=10.0)
        thread.serve(gw)
        gw.begin_iteration(4)
        status, _, body = raw(tmp / "gateway.sock", _request("POST", path, [("Host", "g")], b'{"model":"x"}'))
    assert status == 200 and json.loads(body) == answer
    usage = gw.iteration_usage()
    assert usage.tokens == tokens and usage.requests == 1 and usage.unpriced_requests == 0
    assert usage.cost_usd == pytest.approx(cost, abs=1e-6) and gw.spent_usd() == pytest.approx(cost)
    assert gw.budget.reserved == 0.0
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[-1])
    assert line["model"] == answer["model"] and line["costUsd"] == pytest.approx(cost, abs=1e-6)
    assert line["iteration"] == 4 and line["priced"] is True and line["error"] is None and line["status"] == 200


def test_an_answer_that_names_no_model_is_priced_as_the_request_asked(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder({"type": "message", "usage": {"input_tokens": 1000, "output_tokens": 100}})
    with _Upstream(recorder.handle) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        for body in (b'{"model":"claude-opus-4-1"}', b'{"model":["claude-haiku-4-5"]}', b'{"model":"claude-next"}'):
            raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], body))
    lines = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    assert [(line["model"], line["priced"]) for line in lines] == [
        ("claude-opus-4-1", True), (None, False), ("claude-next", False)]  # fmt: skip
    opus = (1000 * 15 + 100 * 75) / 1e6  # claude-opus-4-1, also Anthropic's dearest row: what no name costs
    assert [line["costUsd"] for line in lines] == [pytest.approx(opus)] * 3
    assert gw.total_usage().unpriced_requests == 2


def test_an_answer_without_usage_under_a_budget_is_charged_its_reservation(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    recorder = _Recorder({"type": "message", "model": "claude-haiku-4-5"})
    body = b'{"model":"claude-haiku-4-5","max_tokens":1000}'
    with _Upstream(recorder.handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=10.0)
        thread.serve(gw)
        status, _, _ = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], body))
    estimate = (len(body) * 1.25 + 1000 * 5) / 1e6  # haiku-4-5: dearest input rate 1.25 (cache write), output 5
    assert status == 200 and gw.spent_usd() == pytest.approx(estimate)
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[-1])
    assert line["error"] == "no final usage" and line["costUsd"] == pytest.approx(estimate, abs=1e-6)
    assert line["priced"] is True and gw.total_usage().unpriced_requests == 0  # no usage: nothing left unpriced


def test_an_upstream_that_cannot_be_reached_is_a_502_and_costs_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ServerThread() as thread:
        gw = _gateway(tmp_path, f"http://127.0.0.1:{port}", max_cost_usd=5.0)
        thread.serve(gw)
        status, headers, body = raw(tmp_path / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    error = json.loads(body)
    assert status == 502 and headers["x-harness-gateway"] == "upstream-error"
    assert error["type"] == "error" and error["error"]["type"] == "api_error"  # Anthropic's format, as asked
    assert "the upstream failed (ClientConnectorError)" in error["error"]["message"]
    assert gw.spent_usd() == 0.0 and gw.budget.reserved == 0.0
    usage = gw.total_usage()
    assert usage.requests == 1 and usage.errors == 1 and usage.cost_usd == 0.0 and usage.unpriced_requests == 0
    assert gw.last_upstream_status() == 502
    line = json.loads((tmp_path / "gateway.log").read_text().splitlines()[-1])
    assert (line["status"], line["error"], line["costUsd"]) == (502, "ClientConnectorError", 0.0)


def test_an_upstream_error_status_is_counted_as_an_error_not_a_rate_limit(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    statuses = [400, 500]

    async def answer(request: web.Request) -> web.Response:
        # Even an error that carries usage is not metered: the provider does not bill it.
        usage = {"input_tokens": 5, "output_tokens": 5}
        return web.json_response({"type": "message", "model": "claude-haiku-4-5", "usage": usage},
                                 status=statuses.pop(0))  # fmt: skip

    with _Upstream(answer) as url:
        gw = _gateway(tmp, url, max_cost_usd=5.0)
        thread.serve(gw)
        gw.begin_iteration(2)
        got = [raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))[0] for _ in "ab"]
    usage = gw.iteration_usage()
    assert got == [400, 500] and usage.errors == 2 and usage.rate_limited == 0 and usage.retry_after_seconds is None
    assert usage.tokens == TokenUsage() and gw.spent_usd() == 0.0 and gw.last_upstream_status() == 500


def test_a_529_is_a_rate_limit_and_each_iteration_counts_afresh(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"type": "error"}, status=529, headers={"retry-after": "3"})

    with _Upstream(answer) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        gw.begin_iteration(1)
        for _ in range(2):
            raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
        first = gw.iteration_usage()
        gw.begin_iteration(2)
        fresh = gw.iteration_usage()
        fresh_status = gw.last_upstream_status()
    assert first.rate_limited == 2 and first.errors == 0 and first.retry_after_seconds == 3.0
    assert fresh.requests == 0 and fresh.rate_limited == 0 and fresh_status is None
    assert gw.total_usage().rate_limited == 2


def test_the_counters_handed_out_are_copies(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_Recorder({"type": "message", "model": "claude-haiku-4-5",
                              "usage": {"input_tokens": 10, "output_tokens": 1}}).handle) as url:  # fmt: skip
        gw = _gateway(tmp, url)
        thread.serve(gw)
        raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    for got in (gw.iteration_usage(), gw.total_usage()):
        got.tokens.input_tokens = 999_999
        got.requests = 77
    assert gw.iteration_usage().tokens.input_tokens == 10 and gw.total_usage().tokens.input_tokens == 10
    assert gw.iteration_usage().requests == 1 and gw.total_usage().requests == 1


# ---- the journal file --------------------------------------------------------------------------------


def test_the_gateway_log_is_private_appended_and_never_followed_through_a_symlink(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        thread.serve(_gateway(tmp, url))
        for _ in range(2):
            raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
        log_path = tmp / "gateway.log"
        assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
        assert len(log_path.read_text().splitlines()) == 2 and all(
            json.loads(line)["path"] == "/v1/messages" for line in log_path.read_text().splitlines()
        )
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "target"
    target.write_text("")
    (elsewhere / "gateway.log").symlink_to(target)
    with ServerThread() as other, _Upstream(_Recorder().handle) as url:
        other.serve(_gateway(elsewhere, url))
        status, _, _ = raw(elsewhere / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and target.read_text() == ""  # the request was served, the symlink not written through


def test_the_gateway_log_stops_at_its_size_cap_and_the_gateway_keeps_serving(
    served: tuple[ServerThread, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.gateway import model

    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        thread.serve(_gateway(tmp, url))
        log_path = tmp / "gateway.log"
        assert raw(tmp / "gateway.sock", get("/v1/files"))[0] == 404
        one = len(log_path.read_bytes())  # a refusal's line: the same length every time
        monkeypatch.setattr(model, "MAX_LOG_BYTES", 2 * one)  # room for exactly one more
        statuses = [raw(tmp / "gateway.sock", get("/v1/files"))[0] for _ in range(3)]
    assert statuses == [404] * 3 and len(log_path.read_bytes()) == 2 * one
    assert len(log_path.read_text().splitlines()) == 2


def test_a_log_that_cannot_be_written_does_not_stop_the_gateway(
    served: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture
) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        upstreams = {"anthropic": Upstream("anthropic", url, KEY)}
        gw = ModelGateway(socket_path=tmp / "gateway.sock", log_path=tmp / "missing" / "gateway.log",
                          upstreams=upstreams, prices=PriceTable(BUILTIN))  # fmt: skip
        thread.serve(gw)
        with caplog.at_level(logging.WARNING, logger="runner.gateway.model"):
            status, _, _ = raw(tmp / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
    assert status == 200 and gw.total_usage().requests == 1
    assert any("gateway log" in r.getMessage() for r in caplog.records)


def test_the_connection_cap_is_logged_once_when_first_reached_and_totalled_at_close(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        gw = _gateway(tmp, url, max_connections=1)
        thread.serve(gw)
        gw.begin_iteration(6)
        answers = []
        for _ in range(2):
            with socket.socket(socket.AF_UNIX) as held:
                held.connect(str(tmp / "gateway.sock"))
                wait_for(lambda: gw.open_connections == 1, what="one open connection")
                waiting = socket.socket(socket.AF_UNIX)
                waiting.connect(str(tmp / "gateway.sock"))
                waiting.sendall(get("/v1/models"))
                wait_for(lambda: gw.times_at_cap >= 1, what="the cap to be reached")
            with waiting:  # the held one closed: the waiting one is accepted and answered
                waiting.settimeout(10)
                data = b""
                while chunk := waiting.recv(65536):
                    data += chunk
            answers.append(data)
            wait_for(lambda: gw.open_connections == 0, what="both connections to end")
        thread.call(gw.close())
    # Each time the accept loop finds the cap reached counts: twice per round (the held one, then the other).
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers) and gw.times_at_cap == 4
    lines = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    capped = [line for line in lines if line.get("refused") == "connection-cap"]
    assert capped == [
        {"ts": capped[0]["ts"], "iteration": 6, "refused": "connection-cap", "openConnections": 1},
        {"ts": capped[1]["ts"], "refused": "connection-cap", "timesAtCap": 4},
    ]
    assert not (tmp / "gateway.sock").exists()  # close() removes its socket


# ---- the budget's edges --------------------------------------------------------------------------


def test_a_request_that_fits_the_budget_exactly_is_admitted_at_once() -> None:
    async def scenario() -> tuple[bool, bool, float]:
        budget = Budget(cap=1.0)
        first = await asyncio.wait_for(budget.reserve(0.5), 5)
        second = await asyncio.wait_for(budget.reserve(0.5), 5)  # 0.5 + 0.5 == the cap: it fits, no waiting
        reserved = budget.reserved
        assert first is not None and second is not None
        budget.settle(first, 0.25)
        budget.settle(second, 0.25)
        return budget.exhausted(), budget.reserved == 0.0, reserved

    exhausted, released, reserved = asyncio.run(scenario())
    assert not exhausted and released and reserved == pytest.approx(1.0)


def test_the_budget_is_exhausted_exactly_at_the_cap_and_never_without_one() -> None:
    assert Budget(cap=1.0, spent=1.0).exhausted()
    assert not Budget(cap=1.0, spent=0.999).exhausted()
    assert not Budget(cap=None, spent=10**6).exhausted()

    async def refused_at_the_cap() -> tuple[bool, bool]:
        at_cap = await Budget(cap=1.0, spent=1.0).reserve(0.0)
        no_cap = await Budget(cap=None, spent=10**6).reserve(10**6)
        return at_cap is None, no_cap is not None

    assert asyncio.run(refused_at_the_cap()) == (True, True)


def test_a_settled_reservation_releases_its_estimate_and_wakes_the_waiters() -> None:
    async def scenario() -> tuple[float, float, int, bool]:
        budget = Budget(cap=1.0)
        first = await budget.reserve(0.75)
        assert first is not None
        waiter = asyncio.create_task(budget.reserve(0.5))  # 0.75 + 0.5 > 1.0 with one in flight: it waits
        while budget.waiting != 1:
            await asyncio.sleep(0)
        budget.settle(first, 0.125)
        second = await asyncio.wait_for(waiter, 5)
        assert second is not None
        reserved, spent = budget.reserved, budget.spent
        budget.settle(second, 0.125)
        third = await asyncio.wait_for(budget.reserve(0.5), 5)  # nothing in flight: admitted under the cap
        return reserved, spent, budget.waiting, third is not None

    reserved, spent, waiting, third = asyncio.run(scenario())
    assert reserved == pytest.approx(0.5) and spent == pytest.approx(0.125) and waiting == 0 and third


def test_the_gateway_judges_a_request_by_its_model_and_output_cap(served: tuple[ServerThread, Path]) -> None:
    """A request whose worst case does not fit waits for the one in flight; the estimate is its model's."""
    thread, tmp = served
    with _Upstream(_Recorder({"type": "message", "model": "claude-haiku-4-5"}).handle) as url:
        gw = _gateway(tmp, url, max_cost_usd=1000.0)
        thread.serve(gw)
        reserved: list[float] = []
        original = gw.budget.reserve

        async def spy(estimate: float) -> Any:
            reserved.append(estimate)
            return await original(estimate)

        gw.budget.reserve = spy  # type: ignore[method-assign]
        bodies = [
            {"model": "claude-opus-4-1", "max_tokens": 100},
            {"model": "claude-haiku-4-5", "max_tokens": 100},
            {"model": 7, "max_tokens": 100},  # not a name: the provider's dearest row
            {"model": "gpt-5", "max_output_tokens": 1000},
        ]
        paths = ["/v1/messages", "/v1/messages", "/v1/messages", "/v1/responses"]
        datas = [json.dumps(b).encode() for b in bodies]
        for path, data in zip(paths, datas, strict=True):
            raw(tmp / "gateway.sock", _request("POST", path, [("Host", "g")], data))
    expected = [
        (len(datas[0]) * 18.75 + 100 * 75) / 1e6,
        (len(datas[1]) * 1.25 + 100 * 5) / 1e6,
        (len(datas[2]) * 18.75 + 100 * 75) / 1e6,
        (len(datas[3]) * 1.25 + 1000 * 10) / 1e6,
    ]
    assert reserved == pytest.approx(expected)


def test_the_output_cap_is_read_per_api_and_only_when_positive() -> None:
    assert output_tokens_asked("messages", {"max_tokens": 1}) == 1
    assert output_tokens_asked("messages", {"max_tokens": 0}) == MAX_OUTPUT_TOKENS
    assert output_tokens_asked("messages", {"max_output_tokens": 5}) == MAX_OUTPUT_TOKENS  # not this API's field
    assert output_tokens_asked("unknown", {"max_tokens": 5}) == MAX_OUTPUT_TOKENS
    assert output_tokens_asked("", {"max_tokens": 5}) == MAX_OUTPUT_TOKENS
    assert output_tokens_asked("chat", {"max_completion_tokens": 0, "max_tokens": 9}) == 9


# ---- the meter ---------------------------------------------------------------------------------------


def _events(meter: UsageMeter, *events: Any, crlf: bool = False) -> UsageMeter:
    end = b"\r\n" if crlf else b"\n"
    for event in events:
        meter.feed(b"data: " + json.dumps(event).encode() + end + end)
    meter.finish()
    return meter


@pytest.mark.parametrize(
    "kind", [None, "response.created", "response.in_progress", "response.completed", "response.incomplete",
             "response.failed"],
)  # fmt: skip
def test_every_lifecycle_event_of_a_response_names_its_model(kind: str | None) -> None:
    event: dict[str, Any] = {"response": {"model": f"gpt-5-{kind}"}}
    if kind is not None:
        event["type"] = kind
    meter = _events(UsageMeter("responses", streaming=True, request_model="asked"), event)
    assert meter.model == f"gpt-5-{kind}"


def test_a_response_item_event_does_not_rename_the_model() -> None:
    event = {"type": "response.output_item.added", "response": {"model": "other"}, "model": "other"}
    assert _events(UsageMeter("responses", streaming=True, request_model="asked"), event).model == "asked"


def test_a_non_streamed_response_is_read_whole() -> None:
    meter = UsageMeter("responses", streaming=False, request_model="asked")
    meter.feed(b'{"object":"response","model":"gpt-5-2025-08-07",')
    meter.feed(b'"usage":{"input_tokens":10,"output_tokens":4,"input_tokens_details":{"cached_tokens":12}}}')
    meter.finish()
    assert meter.model == "gpt-5-2025-08-07" and meter.final
    # More cached than input is a provider's slip: never a negative input, never more cached than input.
    assert meter.usage == TokenUsage(input_tokens=0, cache_read_tokens=10, output_tokens=4)


def test_a_json_answer_over_the_parse_limit_is_not_read() -> None:
    meter = UsageMeter("messages", streaming=False, request_model="asked")
    meter.feed(b'{"type":"message","model":"big","usage":{"output_tokens":9},"pad":"')
    meter.feed(b"a" * MAX_JSON_BODY)
    meter.feed(b'"}')
    meter.finish()
    assert not meter.seen and meter.model == "asked"
    after = UsageMeter("messages", streaming=False, request_model="asked")
    after.feed(b"a" * (MAX_JSON_BODY + 1))
    after.feed(b'{"type":"message","model":"late","usage":{"output_tokens":9}}')  # once over the limit, nothing is read
    after.finish()
    assert not after.seen and after.model == "asked"
    exact = UsageMeter("messages", streaming=False, request_model="asked")
    head = b'{"type":"message","model":"fits","usage":{"output_tokens":9},"pad":"'
    exact.feed(head + b"a" * (MAX_JSON_BODY - len(head) - 2) + b'"}')  # exactly the limit: still read
    exact.finish()
    assert exact.model == "fits" and exact.usage.output_tokens == 9


def test_a_broken_json_answer_counts_nothing() -> None:
    for data in (b'{"type":"message","usage":{"output_tokens":', b"\xff\xfe", b""):
        meter = UsageMeter("messages", streaming=False, request_model="m")
        meter.feed(data)
        meter.finish()
        assert not meter.seen and not meter.final and meter.usage == TokenUsage()


def test_sse_with_crlf_lines_multi_line_data_and_comments_is_read() -> None:
    start = {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 3}}}
    meter = _events(UsageMeter("messages", streaming=True, request_model=None), start, crlf=True)
    assert meter.model == "claude-x" and meter.usage.input_tokens == 3
    multi = UsageMeter("messages", streaming=True, request_model=None)
    multi.feed(
        b': comment\nevent: message_delta\ndata: {"type": "message_delta",\ndata:"usage": {"output_tokens": 8}}\n'
    )
    multi.feed(b"\n")
    multi.finish()
    assert multi.final and multi.usage.output_tokens == 8


def test_a_line_of_spaces_does_not_end_an_event() -> None:
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b'data: {"type": "message_delta",\n   \ndata: "usage": {"output_tokens": 8}}\n\n')
    meter.finish()
    assert meter.final and meter.usage.output_tokens == 8


def test_a_long_crlf_stream_is_cut_into_events_as_it_comes() -> None:
    start = {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 11}}}
    text = b'event: content_block_delta\r\ndata: {"type":"content_block_delta","text":"' + b"x" * 60_000 + b'"}\r\n\r\n'
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b"data: " + json.dumps(start).encode() + b"\r\n\r\n")
    for _ in range(100):  # about 6 MB: more than one event may hold, though no event is long
        meter.feed(text)
    meter.feed(b'data: {"type":"message_delta","usage":{"output_tokens":13}}\r\n\r\n')
    meter.finish()
    assert meter.final and meter.usage == TokenUsage(input_tokens=11, output_tokens=13)


def test_many_events_in_one_large_chunk_are_all_read() -> None:
    start = {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 11}}}
    text = b'data: {"type":"content_block_delta","text":"' + b"x" * 60_000 + b'"}\n\n'
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b"data: " + json.dumps(start).encode() + b"\n\n" + text * 100)  # 6 MB, no event over the limit
    meter.feed(b'data: {"type":"message_delta","usage":{"output_tokens":13}}\n\n')
    meter.finish()
    assert meter.final and meter.usage == TokenUsage(input_tokens=11, output_tokens=13)


def test_a_last_event_without_its_blank_line_is_still_read() -> None:
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b'data: {"type":"message_delta","usage":{"output_tokens":2}}')
    meter.finish()
    assert meter.final and meter.usage.output_tokens == 2
    lines = UsageMeter("messages", streaming=True, request_model=None)
    lines.feed(b'event: message_delta\r\ndata: {"type": "message_delta",\r\n  \r\ndata: "usage": {"output_tokens": 3}}')
    lines.finish()
    assert lines.final and lines.usage.output_tokens == 3


def test_an_over_long_line_ending_in_the_next_chunk_loses_only_its_own_event() -> None:
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b"data: " + b"a" * MAX_SSE_EVENT)
    meter.feed(b"a")  # still inside the long line
    meter.feed(b'aa\n\ndata: {"type":"message_delta","usage":{"output_tokens":6}}\n\n')
    meter.finish()
    assert meter.final and meter.usage.output_tokens == 6
    exact = UsageMeter("messages", streaming=True, request_model=None)
    line = b'data: {"type":"message_delta","usage":{"output_tokens":1}} '
    exact.feed(line + b" " * (MAX_SSE_EVENT - len(line)))  # exactly the limit, no newline yet: kept
    exact.feed(b"\n\n")
    exact.finish()
    assert exact.final and exact.usage.output_tokens == 1


def test_the_long_line_skip_resumes_right_after_the_newline() -> None:
    meter = UsageMeter("messages", streaming=True, request_model=None)
    meter.feed(b"data: " + b"a" * (MAX_SSE_EVENT + 1))
    meter.feed(b'a\n\ndata: {"type":"message_delta","usage":{"output_tokens":4}}\n\n')
    meter.finish()
    assert meter.final and meter.usage.output_tokens == 4
    partial = UsageMeter("messages", streaming=True, request_model=None)
    partial.feed(b"data: " + b"a" * (MAX_SSE_EVENT + 1))
    partial.feed(b'\ndata: {"type":"message_delta","usage":{"output_tokens":5}}\n\n')  # the line ends at byte 0
    partial.finish()
    assert partial.final and partial.usage.output_tokens == 5


def test_done_and_non_json_events_are_ignored() -> None:
    meter = UsageMeter("chat", streaming=True, request_model="m")
    meter.feed(b"data: [DONE]\n\ndata: not json\n\ndata: \xff\n\n")
    meter.feed(b'data: {"model":"gpt-4o","usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n')
    meter.feed(b"data: [DONE]\n\n")
    meter.finish()
    assert meter.model == "gpt-4o" and meter.usage == TokenUsage(input_tokens=2, output_tokens=1)


def test_a_broken_event_that_mentions_usage_is_skipped() -> None:
    meter = UsageMeter("chat", streaming=True, request_model="m")
    meter.feed(b'data: {"usage": oops}\n\ndata: {"usage": "\xff"}\n\n')
    meter.feed(b'data: {"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n')
    meter.finish()
    assert meter.final and meter.usage == TokenUsage(input_tokens=4, output_tokens=2)


def test_the_first_model_the_answer_names_is_kept_unless_a_usage_event_names_another() -> None:
    meter = UsageMeter("chat", streaming=True, request_model="asked")
    chunks = [{"model": "gpt-4o-2024-08-06", "choices": []}, {"model": "gpt-4o-mini", "choices": []},
              {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}]  # fmt: skip
    assert _events(meter, *chunks).model == "gpt-4o-2024-08-06"
    at_once = UsageMeter("chat", streaming=True, request_model="asked")
    at_once.feed(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks))
    at_once.finish()
    assert at_once.model == "gpt-4o-2024-08-06"
    renamed = UsageMeter("chat", streaming=True, request_model="asked")
    chunks[2]["model"] = "gpt-4o-mini"
    assert _events(renamed, *chunks).model == "gpt-4o-mini"


def test_anthropic_usage_fields_keep_their_values_and_reject_negatives() -> None:
    counts = {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 30, "output_tokens": 1}
    start = {"type": "message_start", "message": {"model": "claude-a", "usage": counts}}
    empty_delta = {"type": "message_delta", "usage": {}}
    meter = _events(UsageMeter("messages", streaming=True, request_model=None), start, empty_delta)
    assert not meter.final  # an empty usage is not the closing one
    delta = {"type": "message_delta", "usage": {"output_tokens": 0, "input_tokens": -5}}
    meter = _events(UsageMeter("messages", streaming=True, request_model=None), start, delta)
    assert meter.final and meter.usage == TokenUsage(input_tokens=0, output_tokens=0, cache_read_tokens=20,
                                                     cache_write_tokens=30)  # fmt: skip
    other = {"type": "ping", "model": "not-this", "usage": {"output_tokens": 99}}
    assert _events(UsageMeter("messages", streaming=True, request_model="m"), other).usage == TokenUsage()


def test_a_model_name_is_taken_only_when_plausible() -> None:
    for name, expected in (("", "asked"), (7, "asked"), ("m" * 200, "m" * 200), ("m" * 201, "asked")):
        meter = _events(UsageMeter("chat", streaming=True, request_model="asked"), {"model": name})
        assert meter.model == expected
    message = {"type": "message", "model": "claude-json", "usage": {"output_tokens": 1}}
    assert _events(UsageMeter("messages", streaming=True, request_model=None), message).model == "claude-json"


def test_the_answer_buffer_hands_on_everything_in_order() -> None:
    from runner.gateway.model import _Buffer

    buffer = _Buffer()
    buffer.write(b"data: a")
    buffer.write(b"\n\n")
    buffer.flush()
    assert buffer.take() == b"data: a\n\n" and buffer.take() == b""


# ---- prices -----------------------------------------------------------------------------------------


def test_a_price_row_is_built_from_its_four_rates() -> None:
    assert _p(1, 2, 3, 4) == Price(input=1, output=2, cache_read=3, cache_write=4)
    assert _p(1, 2) == Price(input=1, output=2)
    assert BUILTIN["claude-opus-4-5"] == Price(input=5, output=25, cache_read=0.5, cache_write=6.25)


def test_cost_and_worst_case_use_each_rate() -> None:
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=2_000_000, cache_read_tokens=3_000_000,
                       cache_write_tokens=4_000_000)  # fmt: skip
    assert Price(input=1, output=2, cache_read=0.5, cache_write=3).cost(usage) == pytest.approx(1 + 4 + 1.5 + 12)
    assert Price(input=1, output=2).cost(usage) == pytest.approx(1 + 4 + 3 + 4)  # no cache rates: the input's
    assert Price(input=1, output=2, cache_read=0.0).cost(usage) == pytest.approx(1 + 4 + 0 + 4)
    assert Price(input=1, output=2).worst_case(1_000_000, 1_000_000) == 3.0  # per million tokens, exactly
    assert Price(input=1, output=2, cache_read=5).worst_case(1_000_000, 0) == pytest.approx(5)
    assert Price(input=1, output=2, cache_write=7).worst_case(1_000_000, 0) == pytest.approx(7)
    assert Price(input=0, output=0).worst_case(10**6, 10**6) == 0.0


def test_lookup_is_case_and_space_blind_and_unknown_is_dearest_of_its_provider() -> None:
    table = PriceTable({"Claude-A": Price(input=1, output=1), "claude-b": Price(input=2, output=9),
                        "gpt-a": Price(input=3, output=4), "gpt-b": Price(input=1, output=5)})  # fmt: skip
    assert table.lookup(" CLAUDE-a ", "anthropic") == (Price(input=1, output=1), True)
    assert table.lookup(None, "anthropic") == (Price(input=2, output=9), False)
    assert table.lookup("", "openai") == (Price(input=1, output=5), False)
    assert table.cost("mystery", "openai", TokenUsage(output_tokens=10**6)) == (pytest.approx(5.0), False)
    assert table.cost("gpt-a", "openai", TokenUsage(output_tokens=10**6)) == (pytest.approx(4.0), True)
    assert table.cost("mystery", "anthropic", TokenUsage(output_tokens=10**6)) == (pytest.approx(9.0), False)
    dated = PriceTable({"house-model-20250101": Price(input=1, output=3)})  # a user's row may carry a date itself
    assert dated.lookup("House-Model-20250101", "openai") == (Price(input=1, output=3), True)
    same_output = PriceTable({"a": Price(input=1, output=5), "b": Price(input=2, output=5)})
    assert same_output.dearest("openai") == Price(input=2, output=5)  # ties on output: the dearer input
    assert PriceTable({"claude-only": Price(input=1, output=1)}).dearest("openai") == Price(input=1, output=1)
    assert canonical_model(None) == "" and canonical_model("  GPT-5-Latest ") == "gpt-5"


def test_the_user_price_file_is_found_where_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_PRICES", raising=False)
    row = '[models."My-Model"]\ninput = 1.5\noutput = 2.5\ncache_read = 0.5\n'
    xdg = tmp_path / "xdg"
    (xdg / "harness").mkdir(parents=True)
    (xdg / "harness" / "prices.toml").write_text(row)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert load_prices().lookup("my-model", "openai") == (Price(input=1.5, output=2.5, cache_read=0.5), True)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    home = tmp_path / "home"
    (home / ".config" / "harness").mkdir(parents=True)
    (home / ".config" / "harness" / "prices.toml").write_text(row)
    monkeypatch.setenv("HOME", str(home))
    assert load_prices().lookup("my-model", "openai")[1]
    (home / ".config" / "harness" / "prices.toml").unlink()
    table = load_prices()  # no file anywhere: the built-in table, without complaint
    assert table.rows == BUILTIN and not table.lookup("my-model", "openai")[1]
    named = tmp_path / "named.toml"
    named.write_text(row)
    monkeypatch.setenv("HARNESS_PRICES", "~/../" + home.name + "/../named.toml")
    assert load_prices().lookup("my-model", "openai")[1]  # `~` expanded
    assert load_prices(named).rows["my-model"] == Price(input=1.5, output=2.5, cache_read=0.5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[models\n", "price table"),
        (b"\xff\xfe", "price table"),
        (b'[other]\nx = 1\n', "found other"),
        (b'models = 3\n', "found models"),
        (b'[models."m"]\ninput = 1\n', r"models\.m\.output: Field required"),
        (b'[models."m"]\ninput = 1\noutput = 1\nextra = 1\n', r"models\.m\.extra"),
    ],
)  # fmt: skip
def test_a_bad_price_file_is_a_usage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_bytes(content)
    monkeypatch.setenv("HARNESS_PRICES", str(path))
    with pytest.raises(UsageError, match=message) as caught:
        load_prices()
    assert str(path) in str(caught.value)


def test_an_empty_price_file_leaves_the_built_in_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("# nothing overridden yet\n")
    monkeypatch.setenv("HARNESS_PRICES", str(path))
    assert load_prices().rows == BUILTIN


def test_a_named_price_file_that_is_missing_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_PRICES", str(tmp_path / "nope.toml"))
    with pytest.raises(UsageError, match=r"HARNESS_PRICES: .*nope\.toml is not a file"):
        load_prices()


# ---- the host's environment --------------------------------------------------------------------------


def test_the_base_urls_path_is_kept_as_written_and_a_user_alone_is_refused() -> None:
    from runner.gateway.routes import match, parse_base_url, upstream_url

    base = parse_base_url("http://proxy.invalid:8080/gate%20way/openai/v1/")
    matched = match("GET", "/v1/models?limit=2") or pytest.fail("no match")
    assert str(upstream_url(base, "openai", matched)) == "http://proxy.invalid:8080/gate%20way/openai/v1/models?limit=2"
    with pytest.raises(UsageError, match=r"^ANTHROPIC_BASE_URL: .*credentials"):
        upstreams_from_env({"ANTHROPIC_BASE_URL": "http://user@proxy.invalid"})


def test_the_upstreams_come_from_the_hosts_environment() -> None:
    defaults = upstreams_from_env({})
    assert defaults["anthropic"] == Upstream("anthropic", ANTHROPIC_DEFAULT, None)
    assert defaults["openai"] == Upstream("openai", OPENAI_DEFAULT, None)
    assert (defaults["anthropic"].key, defaults["openai"].key) == (None, None)
    env = {"ANTHROPIC_BASE_URL": "http://a.invalid:1", "ANTHROPIC_API_KEY": "ak", "ANTHROPIC_AUTH_TOKEN": "at",
           "OPENAI_BASE_URL": "http://o.invalid/v1", "OPENAI_API_KEY": "ok"}  # fmt: skip
    got = upstreams_from_env(env)
    assert (got["anthropic"].base_url, got["anthropic"].key) == ("http://a.invalid:1", "ak")
    assert (got["openai"].base_url, got["openai"].key) == ("http://o.invalid/v1", "ok")
    assert got["anthropic"].provider == "anthropic" and got["openai"].provider == "openai"
    token = upstreams_from_env({"ANTHROPIC_API_KEY": "", "ANTHROPIC_AUTH_TOKEN": "at", "OPENAI_API_KEY": ""})
    assert token["anthropic"].key == "at" and token["openai"].key is None
    empty = upstreams_from_env({"ANTHROPIC_BASE_URL": "", "OPENAI_BASE_URL": ""})
    assert (empty["anthropic"].base_url, empty["openai"].base_url) == (ANTHROPIC_DEFAULT, OPENAI_DEFAULT)
    with pytest.raises(UsageError, match=r"^OPENAI_BASE_URL: "):
        upstreams_from_env({"OPENAI_BASE_URL": "ftp://x"})
    assert secret_keys(got) == {"ANTHROPIC_API_KEY": "ak", "OPENAI_API_KEY": "ok"}
    assert secret_keys(defaults) == {}


def test_the_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-process")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://process.invalid/v1")
    got = upstreams_from_env()
    assert got["anthropic"].key == "from-process" and got["openai"].base_url == "http://process.invalid/v1"


def test_a_retry_after_is_bounded_and_nan_is_ignored() -> None:
    assert parse_retry_after("nan") is None and parse_retry_after("") is None
    assert parse_retry_after(" 2.5 ") == 2.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00") is None  # HTTP dates are GMT: no zone, no date
    far = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT")
    assert far == 24 * 3600.0


# ---- the run's network, as the supervisor owns it -------------------------------------------------


def _summary(network: str = "none", agent: str = "claude", **kw: Any) -> RunSummary:
    return RunSummary(
        session_id="s1", objective="o", max_iterations=1, network=network,  # type: ignore[arg-type]
        worktree=WorktreeInfo(base_ref="HEAD", base_commit="a" * 40, path="/x/w", branch="harness/s1"),
        repo="/repo", run_dir="/x", image="img", agent=AgentInfo(name=agent, command=["x"]), limits=Limits(), **kw,
    )  # fmt: skip


def test_the_wiring_names_the_sockets_and_the_proxy_environment(tmp_path: Path) -> None:
    plain = Wiring(tmp_path, egress=False)
    assert [(s.name, s.port, s.socket) for s in plain.services()] == [("gateway", 8787, tmp_path / "gateway.sock")]
    assert plain.proxy_env() == {}
    both = Wiring(tmp_path, egress=True)
    assert [(s.name, s.port, s.socket) for s in both.services()] == [
        ("gateway", 8787, tmp_path / "gateway.sock"), ("egress", 8788, tmp_path / "egress.sock")]  # fmt: skip
    assert PROXY_URL == "http://127.0.0.1:8788"
    assert both.proxy_env() == {
        "HTTPS_PROXY": PROXY_URL, "HTTP_PROXY": PROXY_URL, "https_proxy": PROXY_URL, "http_proxy": PROXY_URL,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip


def test_the_connection_cap_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_GATEWAY_MAX_CONNECTIONS", raising=False)
    assert gateway_max_connections() == MAX_CONNECTIONS
    for good, value in (("1", 1), ("1000000", 1_000_000), ("64", 64)):
        monkeypatch.setenv("HARNESS_GATEWAY_MAX_CONNECTIONS", good)
        assert gateway_max_connections() == value
    for bad in ("0", "1000001", "-1", "x", "", "١٢", " 5"):
        monkeypatch.setenv("HARNESS_GATEWAY_MAX_CONNECTIONS", bad)
        with pytest.raises(UsageError, match=r"HARNESS_GATEWAY_MAX_CONNECTIONS=.*whole number from 1 to 1000000"):
            gateway_max_connections()
    assert [str(r) for r in parse_allow_hosts(["Example.COM", "h.invalid:8443"])] == ["example.com:443",
                                                                                     "h.invalid:8443"]  # fmt: skip


def test_a_run_network_serves_its_gateway_with_the_runs_budget_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = _Recorder({"type": "message", "model": "claude-haiku-4-5",
                          "usage": {"input_tokens": 1_000_000, "output_tokens": 0}})  # fmt: skip
    with _Upstream(recorder.handle) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-run-network-key")
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("HARNESS_GATEWAY_MAX_CONNECTIONS", "7")
        monkeypatch.setenv("HARNESS_PRICES", str(tmp_path / "prices.toml"))
        (tmp_path / "prices.toml").write_text('[models."claude-haiku-4-5"]\ninput = 2.0\noutput = 1.0\n')
        summary = _summary(allow_hosts=["example.com"])
        summary.limits.max_cost_usd = 5.0
        summary.usage.cost_usd = 1.5
        net, journal = tmp_path / "net", tmp_path / "journal"
        journal.mkdir()
        network = RunNetwork(summary=summary, net_dir=net, journal_dir=journal, secrets={"MY_TOKEN": "tok-123456789"})
        assert (
            network.gateway.max_connections == 7 and network.egress is None and network.rules[0].host == "example.com"
        )
        assert network.gateway.log_path == journal / GATEWAY_LOG and network.secrets == {
            "ANTHROPIC_API_KEY": "sk-run-network-key"}  # fmt: skip
        assert network.wiring == Wiring(net, egress=False)
        with caplog.at_level(logging.INFO, logger="runner.gateway.services"):
            network.start()
        try:
            assert stat.S_IMODE(net.stat().st_mode) == 0o755
            assert "harness-net-s1" in {t.name for t in threading.enumerate()}  # named after its session
            assert stat.S_ISSOCK((net / "gateway.sock").stat().st_mode) and not (net / "egress.sock").exists()
            status, _, _ = raw(net / "gateway.sock", _request("POST", "/v1/messages", [("Host", "g")], b"{}"))
            usage = network.iteration_usage()
        finally:
            network.stop()
    assert status == 200 and recorder.seen[0][1]["x-api-key"] == "sk-run-network-key"
    assert usage.cost_usd == pytest.approx(2.0)  # the user's price row
    assert network.gateway.spent_usd() == pytest.approx(3.5) and network.gateway.budget.cap == 5.0
    assert network.gateway.redactor.text("tok-123456789") == "[REDACTED:MY_TOKEN]"
    assert not (net / "gateway.sock").exists() and (journal / GATEWAY_LOG).exists()
    assert any("model gateway on" in r.getMessage() for r in caplog.records)
    assert not any("no ANTHROPIC_API_KEY" in r.getMessage() for r in caplog.records)


def test_an_allowlist_run_also_serves_the_egress_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("HARNESS_GATEWAY_MAX_CONNECTIONS", raising=False)
    monkeypatch.delenv("HARNESS_PRICES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    net, journal = tmp_path / "net", tmp_path / "journal"
    net.mkdir(mode=0o777)
    net.chmod(0o777)
    journal.mkdir()
    network = RunNetwork(summary=_summary("allowlist", allow_hosts=["example.com:8443"]), net_dir=net,
                         journal_dir=journal)  # fmt: skip
    assert network.egress is not None and network.egress.log_path == journal / EGRESS_LOG
    assert network.gateway.max_connections == MAX_CONNECTIONS and network.wiring == Wiring(net, egress=True)
    assert network.needs_model and network.secrets == {}
    network.start()
    try:
        assert stat.S_IMODE(net.stat().st_mode) == 0o755  # made exact, even though it existed
        assert stat.S_ISSOCK((net / "egress.sock").stat().st_mode) and (net / "gateway.sock").exists()
    finally:
        network.stop()
    assert not (net / "egress.sock").exists() and not (net / "gateway.sock").exists()
    assert not RunNetwork(summary=_summary(agent="demo"), net_dir=net, journal_dir=journal).needs_model


def test_a_run_network_warns_when_there_is_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "HARNESS_PRICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "journal").mkdir()
    for agent, warned in (("claude", True), ("demo", False)):
        network = RunNetwork(summary=_summary(agent=agent), net_dir=tmp_path / "net", journal_dir=tmp_path / "journal")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="runner.gateway.services"):
            network.start()
        network.stop()
        assert any("model calls go upstream without a key" in r.getMessage() for r in caplog.records) is warned


def test_a_run_network_that_cannot_start_its_gateway_stops_its_thread(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    (net / "gateway.sock").write_text("not a socket")  # bind refuses to replace a regular file
    (tmp_path / "journal").mkdir()
    network = RunNetwork(summary=_summary(agent="demo"), net_dir=net, journal_dir=tmp_path / "journal")
    before = threading.active_count()
    with pytest.raises(OSError, match="Address already in use"):
        network.start()
    wait_for(lambda: threading.active_count() <= before, timeout=15, what="the server thread to end")
    assert (net / "gateway.sock").read_text() == "not a socket"


# ---- the servers' loop -------------------------------------------------------------------------------


def test_the_server_thread_refuses_misuse() -> None:
    thread = ServerThread("t")

    async def answer() -> int:
        return 42

    coro = answer()
    with pytest.raises(RuntimeError, match="not running"):
        thread.call(coro)
    thread.stop()  # stopping one never started is a no-op
    with thread:
        with pytest.raises(RuntimeError, match="already started"):
            thread.start()
        assert thread.call(answer()) == 42

        async def inside() -> str:
            inner = answer()
            try:
                thread.call(inner)
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        assert "deadlock" in thread.call(inside())

        async def slow() -> None:
            await asyncio.Event().wait()

        with pytest.raises(TimeoutError, match=r"a call into t took longer than 0\.2s"):
            thread.call(slow(), timeout=0.2)
    with pytest.raises(RuntimeError, match="not running"):
        _ = thread.loop


def test_serve_gives_up_on_a_server_that_does_not_start_in_time() -> None:
    class Stuck:
        async def start(self) -> None:
            await asyncio.Event().wait()

        async def close(self) -> None:
            pass

    with ServerThread() as thread, pytest.raises(TimeoutError, match=r"longer than 0\.2s"):
        thread.serve(Stuck(), timeout=0.2)


def test_closing_a_gateway_whose_socket_file_is_gone_is_quiet(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with _Upstream(_Recorder().handle) as url:
        gw = _gateway(tmp, url)
        thread.serve(gw)
        (tmp / "gateway.sock").unlink()  # someone cleaned the directory first
        thread.call(gw.close())
    assert not (tmp / "gateway.sock").exists()


def test_the_server_thread_is_a_named_daemon_and_keeps_loop_faults_out_of_the_output(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with ServerThread() as thread, caplog.at_level(logging.DEBUG):
        assert [t.daemon for t in threading.enumerate() if t.name == "harness-servers"] == [True]
        thread.loop.call_soon_threadsafe(thread.loop.call_exception_handler, {"message": "a connection broke"})
        wait_for(lambda: any("a connection broke" in r.getMessage() for r in caplog.records), what="the fault")
    fault = [r for r in caplog.records if "a connection broke" in r.getMessage()]
    assert [(r.name, r.levelno, r.getMessage()) for r in fault] == [
        ("runner.gateway.loop", logging.DEBUG, "server loop: a connection broke")]  # fmt: skip


def test_stop_gives_up_on_a_server_that_does_not_close_and_cancels_what_is_left() -> None:
    class Hanging:
        async def start(self) -> None:
            pass

        async def close(self) -> None:
            await asyncio.Event().wait()

    async def leave_a_task() -> asyncio.Task[None]:
        return asyncio.ensure_future(asyncio.Event().wait())

    thread = ServerThread()
    thread.start()
    thread.serve(Hanging())
    left = thread.call(leave_a_task())
    thread.stop(timeout=0.5)  # returns: the close that hangs is cut at the timeout
    with pytest.raises(RuntimeError, match="not running"):
        _ = thread.loop
    quiet = ServerThread()
    quiet.start()
    task = quiet.call(leave_a_task())
    quiet.stop()
    assert task.cancelled() and not left.done()  # the shutdown that hung never reached it


def test_stop_closes_servers_newest_first_and_survives_a_failing_close(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []

    class Server:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise ValueError("close failed")

    thread = ServerThread()
    thread.start()
    for server in (Server("first"), Server("second", fail=True), Server("third")):
        thread.serve(server)
    with caplog.at_level(logging.WARNING, logger="runner.gateway.loop"):
        thread.stop()
    assert closed == ["third", "second", "first"]
    assert any("closing Server failed: close failed" in r.getMessage() for r in caplog.records)
    thread.stop()  # twice: nothing more happens
    assert closed == ["third", "second", "first"]


def test_a_unix_socket_replaces_a_stale_one_but_no_other_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    first = bind_unix_socket(path)
    first.close()  # a killed supervisor's socket stays behind
    second = bind_unix_socket(path, mode=0o600)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not second.getblocking()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # it listens
    finally:
        second.close()
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(OSError, match="Address already in use"):
        bind_unix_socket(plain)
    assert plain.read_text() == "x"
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    long = bind_unix_socket(deep / "gateway.sock")
    try:
        assert stat.S_IMODE((deep / "gateway.sock").stat().st_mode) == 0o666
        assert len(os.fsencode(deep / "gateway.sock")) > 107
    finally:
        long.close()
