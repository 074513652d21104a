"""A stand-in model API for the gateway benchmark: `POST /v1/messages` answers with Anthropic-style
SSE (message_start, text deltas, message_delta with the usage, message_stop), as fast as it can.

Run it as its own process (`python -m bench._sse_upstream`), so that it never shares an interpreter
lock with the gateway under test: it listens on 127.0.0.1 on a free port, prints `{"port": N}` on
one line, and serves until its stdin closes (it ends with the benchmark that started it, whatever
way that one ends).

The request's `x-bench-reply: BYTES,EVENTS[,PAUSE_MS]` header asks for about BYTES of text deltas,
written EVENTS events at a time (1: each event its own write, as a model streams tokens), PAUSE_MS
apart (0: as fast as it can; 10: a model's pace); without it, a short answer. `x-bench-body-bytes`
gives the exact size of the body, so the client can check it got all of it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from functools import cache

MODEL = "claude-sonnet-4-5-20250929"
DEFAULT_REPLY = (2048, 1, 0.0)
MAX_REPLY_BYTES = 256 * 1024**2
MAX_PAUSE_MS = 1000.0
TEXT = "lorem ipsum dolor sit a "  # 24 characters: a few tokens, as a model's deltas carry


def _event(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@cache
def reply(size: int, per_write: int) -> tuple[list[bytes], int]:
    """The answer's writes and its total size (the same bytes for every request of that shape)."""
    delta = _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": TEXT}})  # fmt: skip
    count = max(1, -(-size // len(delta)))
    start = _event("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1000, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}})  # fmt: skip
    block = _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})  # fmt: skip
    end = [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "usage": {"output_tokens": count * 6},
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    events = [start, block, *([delta] * count), *end]
    writes = [b"".join(events[i : i + per_write]) for i in range(0, len(events), per_write)]
    return writes, sum(map(len, writes))


def parse_reply(value: str | None) -> tuple[int, int, float]:
    if not value:
        return DEFAULT_REPLY
    parts = value.split(",", 2)
    size, per_write, pause = parts[0], parts[1] if len(parts) > 1 else "1", parts[2] if len(parts) > 2 else "0"
    return min(max(int(size), 1), MAX_REPLY_BYTES), max(int(per_write), 1), min(max(float(pause), 0.0), MAX_PAUSE_MS)


async def serve() -> None:
    from aiohttp import web

    async def messages(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())  # as an API would, and a malformed body is a 500 here
        if not isinstance(body, dict) or not body.get("stream"):
            error = {"type": "invalid_request_error", "message": "bench: stream only"}
            return web.json_response({"type": "error", "error": error}, status=400)
        try:
            size, per_write, pause_ms = parse_reply(request.headers.get("x-bench-reply"))
            writes, total = reply(size, per_write)
        except ValueError:
            return web.json_response({"type": "error"}, status=400)
        response = web.StreamResponse(headers={
            "content-type": "text/event-stream", "cache-control": "no-cache", "request-id": "req_bench",
            "x-bench-body-bytes": str(total),
        })  # fmt: skip
        await response.prepare(request)
        for i, chunk in enumerate(writes):
            if pause_ms and i:
                await asyncio.sleep(pause_ms / 1000)
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # loopback only
    await web.SockSite(runner, sock, backlog=1024).start()
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, sys.stdin.buffer.read)  # until the benchmark closes our stdin
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
