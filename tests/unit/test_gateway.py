"""The model gateway on a real Unix socket, against a scripted upstream on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runner.gateway.loop import ServerThread
from runner.gateway.model import ModelGateway, parse_retry_after
from runner.gateway.prices import BUILTIN, PriceTable, load_prices
from runner.gateway.upstreams import Upstream
from runner.record.models import TokenUsage
from tests.upstreams import Error, Reply, ScriptedUpstream, Usage

REAL_ANTHROPIC = "sk-ant-real-key-0123456789abcdef"
REAL_OPENAI = "sk-openai-real-key-0123456789abcdef"
PLACEHOLDER = "harness-placeholder"


def _gateway(tmp: Path, upstream_url: str, **kwargs: Any) -> ModelGateway:
    return ModelGateway(
        socket_path=tmp / "gateway.sock",
        log_path=tmp / "gateway.log",
        upstreams={
            "anthropic": Upstream("anthropic", upstream_url, REAL_ANTHROPIC),
            "openai": Upstream("openai", upstream_url + "/v1", REAL_OPENAI),
        },
        prices=PriceTable(BUILTIN),
        **kwargs,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    with ServerThread() as thread:
        yield thread, tmp_path


async def _post(sock: Path, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with session.post(f"http://gateway{path}", data=data, headers=headers or {}) as resp:
            return resp.status, await resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def post(sock: Path, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    return asyncio.run(_post(sock, path, body, headers))


ANTHROPIC_HEADERS = {"x-api-key": PLACEHOLDER, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024"}


def test_anthropic_stream_swaps_the_key_passes_headers_and_counts(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    usage = Usage(input_tokens=1000, output_tokens=2000, cache_read_tokens=10_000, cache_write_tokens=100)
    with ScriptedUpstream(
        anthropic=[Reply(tool_calls=(), text="hi", model="claude-sonnet-4-5-20250929", usage=usage)]
    ) as up:
        gw = _gateway(tmp, up.url)
        thread.serve(gw)
        gw.begin_iteration(1)
        body = {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 10, "tools": [{"name": "Bash"}],
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        status, raw, _ = post(tmp / "gateway.sock", "/v1/messages?beta=true", body, ANTHROPIC_HEADERS)
        seen = up.seen("/v1/messages")
    assert status == 200 and b"message_stop" in raw
    assert seen[0].headers["x-api-key"] == REAL_ANTHROPIC and "authorization" not in seen[0].headers
    assert seen[0].headers["anthropic-beta"] == "tools-2024" and seen[0].query == "beta=true"
    got = gw.iteration_usage()
    assert got.tokens == TokenUsage(input_tokens=1000, output_tokens=2000, cache_read_tokens=10_000,
                                    cache_write_tokens=100)  # fmt: skip
    expected = (1000 * 3 + 2000 * 15 + 10_000 * 0.3 + 100 * 3.75) / 1e6
    assert got.cost_usd == pytest.approx(expected) and got.requests == 1 and got.unpriced_requests == 0
    line = json.loads((tmp / "gateway.log").read_text().splitlines()[0])
    assert line["model"] == "claude-sonnet-4-5-20250929" and line["status"] == 200 and line["inputTokens"] == 1000


def test_openai_responses_and_chat_count_cached_tokens(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    usage = Usage(input_tokens=800, output_tokens=100, cache_read_tokens=200, reasoning_tokens=40)
    with ScriptedUpstream(responses=[Reply(text="ok", usage=usage)], chat=[Reply(text="ok", usage=usage)]) as up:
        gw = _gateway(tmp, up.url)
        thread.serve(gw)
        auth = {"authorization": f"Bearer {PLACEHOLDER}"}
        tools = [{"type": "function", "name": "exec_command"}]
        s1, raw1, _ = post(tmp / "gateway.sock", "/v1/responses",
                           {"model": "gpt-5", "stream": True, "input": "hi", "tools": tools}, auth)  # fmt: skip
        s2, raw2, _ = post(
            tmp / "gateway.sock",
            "/v1/chat/completions",
            {"model": "gpt-4.1", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            auth,
        )
        responses, chat = up.seen("/v1/responses"), up.seen("/v1/chat/completions")
    assert (s1, s2) == (200, 200), (raw1, raw2)
    assert responses[0].headers["authorization"] == f"Bearer {REAL_OPENAI}"
    assert chat[0].body["stream_options"] == {"include_usage": True}  # added so the stream carries usage
    got = gw.total_usage()
    assert got.requests == 2
    assert got.tokens == TokenUsage(input_tokens=1600, output_tokens=200, cache_read_tokens=400,
                                    reasoning_tokens=80)  # fmt: skip
    expected = (800 * 1.25 + 100 * 10 + 200 * 0.125) / 1e6 + (800 * 2 + 100 * 8 + 200 * 0.5) / 1e6
    assert got.cost_usd == pytest.approx(expected, rel=1e-4)


def test_budget_refuses_once_spent_and_upstream_never_sees_the_refused_request(
    served: tuple[ServerThread, Path],
) -> None:
    thread, tmp = served
    big = Usage(input_tokens=100_000, output_tokens=100_000)  # 0.3 + 1.5 = $1.80 on sonnet
    with ScriptedUpstream(anthropic=[Reply(text="a", usage=big), Reply(text="b", usage=big)]) as up:
        gw = _gateway(tmp, up.url, max_cost_usd=2.0, spent_before_usd=0.5)
        thread.serve(gw)
        gw.begin_iteration(3)
        body = {"model": "claude-sonnet-4", "stream": True, "messages": [], "tools": [{"name": "Bash"}]}
        first = post(tmp / "gateway.sock", "/v1/messages", body, ANTHROPIC_HEADERS)
        second = post(tmp / "gateway.sock", "/v1/messages", body, ANTHROPIC_HEADERS)
        upstream_count = len(up.seen("/v1/messages"))
    assert first[0] == 200 and gw.budget_spent() and gw.spent_usd() == pytest.approx(2.3)
    assert second[0] == 403 and second[2]["x-harness-gateway"] == "budget"
    error = json.loads(second[1])["error"]
    assert (
        error["type"] == "permission_error" and "--max-cost" in error["message"] and "do not retry" in error["message"]
    )
    assert upstream_count == 1
    assert gw.iteration_usage().refused_budget == 1
    refused = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines()]
    assert refused[-1]["refused"] == "budget" and refused[-1]["iteration"] == 3


def test_rate_limit_is_recorded_with_retry_after(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream(anthropic=[Error(429, headers={"retry-after": "7"})]) as up:
        gw = _gateway(tmp, up.url)
        thread.serve(gw)
        gw.begin_iteration(1)
        body = {"model": "m", "stream": True, "tools": [{"name": "x"}]}
        status, _, headers = post(tmp / "gateway.sock", "/v1/messages", body, ANTHROPIC_HEADERS)
    assert status == 429 and headers.get("retry-after") == "7"  # passed through: the agent may wait itself
    usage = gw.iteration_usage()
    assert usage.rate_limited == 1 and usage.retry_after_seconds == 7.0 and usage.errors == 0
    assert gw.last_upstream_status() == 429


def test_bad_input_gets_clear_errors_and_the_gateway_keeps_serving(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    with ScriptedUpstream() as up:
        gw = _gateway(tmp, up.url, max_body_bytes=64 * 1024)
        thread.serve(gw)
        sock = tmp / "gateway.sock"
        unknown = post(sock, "/v1/../../etc/passwd", {}, ANTHROPIC_HEADERS)
        malformed = post(sock, "/v1/messages", b"{not json", ANTHROPIC_HEADERS)
        array = post(sock, "/v1/responses", b"[1, 2]")
        oversized = post(sock, "/v1/messages", b'{"x": "' + b"a" * 200_000 + b'"}', ANTHROPIC_HEADERS)
        fine = post(sock, "/v1/messages", {"model": "claude-haiku-4-5", "messages": []}, ANTHROPIC_HEADERS)
    assert unknown[0] == 404 and json.loads(unknown[1])["type"] == "error"
    assert malformed[0] == 400 and array[0] == 400 and "error" in json.loads(array[1])
    assert oversized[0] == 413
    assert fine[0] == 200
    for response in (unknown, malformed, array, oversized, fine):
        assert REAL_ANTHROPIC.encode() not in response[1] and REAL_OPENAI.encode() not in response[1]
    log = (tmp / "gateway.log").read_text()
    assert REAL_ANTHROPIC not in log and REAL_OPENAI not in log
    assert {json.loads(line).get("refused") for line in log.splitlines()} >= {"unknown-path", "malformed-json"}


class _SlowUpstream:
    """Holds every request until released, so the gateway's bounds are reached deterministically."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.entered += 1
        await self.release.wait()
        return web.json_response({"type": "message", "model": "claude-haiku-4-5", "usage": {"input_tokens": 1}})


def test_a_thousand_concurrent_requests_are_bounded_and_the_gateway_recovers(tmp_path: Path) -> None:
    slow = _SlowUpstream()

    async def scenario() -> tuple[list[int], int, int]:
        app = web.Application()
        app.router.add_post("/v1/messages", slow.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        gw = _gateway(tmp_path, f"http://127.0.0.1:{port}", max_active=4, max_waiting=4)
        await gw.start()
        connector = aiohttp.UnixConnector(path=str(tmp_path / "gateway.sock"), limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.post("http://g/v1/messages", json={"model": "m"}, headers=ANTHROPIC_HEADERS) as r:
                    await r.read()
                    return r.status

            tasks = [asyncio.create_task(one()) for _ in range(1000)]
            deadline = asyncio.get_running_loop().time() + 60
            while (
                sum(t.done() for t in tasks) < 992 or slow.entered < 4
            ) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            entered_while_held = slow.entered
            slow.release.set()
            statuses = list(await asyncio.gather(*tasks))
            after = await one()
        await gw.close()
        await runner.cleanup()
        return statuses, entered_while_held, after

    statuses, entered, after = asyncio.run(scenario())
    assert statuses.count(503) == 992 and statuses.count(200) == 8
    assert entered == 4  # never more than max_active upstream requests at once
    assert after == 200


def test_long_socket_paths_are_bound_through_the_directory(served: tuple[ServerThread, Path]) -> None:
    thread, tmp = served
    deep = tmp / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with ScriptedUpstream() as up:
        gw = ModelGateway(socket_path=deep / "gateway.sock", log_path=tmp / "log", prices=PriceTable(BUILTIN),
                          upstreams={"anthropic": Upstream("anthropic", up.url, "k" * 20)})  # fmt: skip
        thread.serve(gw)
        (tmp / "short").symlink_to(deep)  # a client has the same path limit
        status, _, _ = post(
            tmp / "short/gateway.sock", "/v1/messages", {"model": "x", "messages": []}, ANTHROPIC_HEADERS
        )
    assert len(str(deep / "gateway.sock")) > 108 and status == 200
    assert (deep / "gateway.sock").stat().st_mode & 0o777 == 0o666


def test_prices_match_dated_names_fall_back_dearly_and_take_user_rows(tmp_path: Path, monkeypatch) -> None:
    table = PriceTable(BUILTIN)
    assert table.lookup("claude-sonnet-4-5-20250929", "anthropic") == (BUILTIN["claude-sonnet-4-5"], True)
    assert table.lookup("openai/gpt-5-mini", "openai") == (BUILTIN["gpt-5-mini"], True)
    price, known = table.lookup("claude-future-9", "anthropic")
    assert not known and price.output == max(p.output for k, p in BUILTIN.items() if k.startswith("claude"))
    path = tmp_path / "prices.toml"
    path.write_text('[models."claude-future-9"]\ninput = 1.0\noutput = 2.0\n')
    monkeypatch.setenv("HARNESS_PRICES", str(path))
    assert load_prices().lookup("claude-future-9-latest", "anthropic")[1]
    path.write_text('[models."x"]\ninput = -1\noutput = 2\n')
    from runner.base.errors import UsageError

    with pytest.raises(UsageError, match=r"models\.x\.input"):
        load_prices()


def test_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("junk") is None and parse_retry_after(None) is None
    assert parse_retry_after("999999999") == 24 * 3600.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by nobody the system trusts (openssl, as on every host here)."""
    import subprocess

    cert, key = tmp / "upstream.crt", tmp / "upstream.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_to_the_upstream_is_verified_and_the_hosts_extra_cas_are_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from runner.base.trust import ssl_context

    cert, key = _self_signed(tmp_path)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"type": "message", "usage": {}})

    async def scenario(trust: bool) -> int:
        app = web.Application()
        app.router.add_post("/v1/messages", answer)
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
        port = runner.addresses[0][1]
        if trust:
            monkeypatch.setenv("HARNESS_EXTRA_CA_CERTS", str(cert))
        else:
            monkeypatch.delenv("HARNESS_EXTRA_CA_CERTS", raising=False)
        sock_dir = tmp_path / ("trusted" if trust else "untrusted")
        sock_dir.mkdir()
        gw = _gateway(sock_dir, f"https://127.0.0.1:{port}", ssl_context=ssl_context())
        await gw.start()
        status, _, _ = await _post(sock_dir / "gateway.sock", "/v1/messages", {"model": "m"}, ANTHROPIC_HEADERS)
        await gw.close()
        await runner.cleanup()
        return status

    assert asyncio.run(scenario(trust=False)) == 502  # an unknown certificate is refused
    assert asyncio.run(scenario(trust=True)) == 200  # the host's extra CA makes it trusted
