"""Scripted stand-ins for the model APIs the real agent CLIs talk to (loopback only).

`ScriptedUpstream` is an aiohttp server on 127.0.0.1 (random port, background thread) that speaks
the Anthropic Messages API (`/v1/messages`, SSE or JSON), the OpenAI Responses API (`/v1/responses`)
and Chat Completions (`/v1/chat/completions`). Each provider has its own script: a list of steps,
each a `Reply` (text and/or tool calls, model name, usage) or an `Error` (status, body, headers).
Only the agent's main-loop requests take steps (see `_takes_step`); side requests (titles, commit
messages, token counting, model listing) get a fixed harmless answer, and so does every request after
the script ran out. Every request is recorded for assertions.

Ready scripts that make a real agent edit a file, commit it and report done:
`claude_code_script`, `codex_script`, `aider_script` (each returns the steps for its provider).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Provider = Literal["anthropic", "responses", "chat"]
DEFAULT_MODEL = "scripted-model"
FINAL_TEXT = "Nothing more to do."


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply. `input_tokens` excludes cache reads and writes (Anthropic's meaning);
    for OpenAI the reported input is input_tokens + cache_read_tokens, of which cache_read are cached."""

    input_tokens: int = 120
    output_tokens: int = 30
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict[str, Any] | str  # a str is a freeform tool's input (Responses `custom_tool_call`)


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    model: str | None = None  # None: the model the request asked for
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Error:
    status: int
    body: dict[str, Any] | None = None  # None: the provider's usual error body for the status
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "7"}


Step = Reply | Error


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    step: int | None  # index of the script step it took, None for side requests


def anthropic_error(status: int, message: str = "scripted error") -> dict[str, Any]:
    kind = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error", 400: "invalid_request_error"}
    return {"type": "error", "error": {"type": kind.get(status, "api_error"), "message": message}}


def openai_error(status: int, message: str = "scripted error") -> dict[str, Any]:
    code = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}.get(
        status, "server_error"
    )
    kind = {429: "requests", 401: "invalid_request_error", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {payload}\n\n".encode()


def _takes_step(provider: Provider, body: Any) -> bool:
    """Main-loop requests take script steps; side requests (titles, commit messages) do not."""
    if not isinstance(body, dict):
        return False
    if provider == "anthropic":
        return bool(body.get("tools"))  # the agent loop always offers its tools; side calls do not
    if provider == "responses":  # Codex's default model gets its tools in an `additional_tools` input item
        items = body.get("input") if isinstance(body.get("input"), list) else []
        return bool(body.get("tools")) or any(
            isinstance(i, dict) and i.get("type") == "additional_tools" for i in items
        )
    messages = body.get("messages") or []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    system = first.get("content") if first.get("role") == "system" else ""
    return "commit message" not in str(system).lower()  # aider asks its weak model for commit messages


class ScriptedUpstream:
    """Use as a context manager; `url` is the base (no /v1), `requests` what it saw."""

    def __init__(
        self,
        anthropic: list[Step] | None = None,
        responses: list[Step] | None = None,
        chat: list[Step] | None = None,
        untaken: dict[Provider, list[Step]] | None = None,
        token_answer: dict[str, Any] | None = None,
    ) -> None:
        self.scripts: dict[Provider, list[Step]] = {
            "anthropic": list(anthropic or []),
            "responses": list(responses or []),
            "chat": list(chat or []),
        }
        self.taken: dict[Provider, int] = {"anthropic": 0, "responses": 0, "chat": 0}
        # Answers, in order, for the API requests that take no script step (side calls, usage-limit probes).
        self.untaken: dict[Provider, list[Step]] = {k: list(v) for k, v in (untaken or {}).items()}
        self.token_answer = token_answer  # what POST /oauth/token answers (an OAuth refresh), else 404
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="scripted-upstream")
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ids = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- assertions helpers -----------------------------------------------------------------------
    def seen(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def remaining(self, provider: Provider) -> int:
        with self._lock:
            return len(self.scripts[provider]) - self.taken[provider]

    # -- dispatch -----------------------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}_{self._ids:04d}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = request.path
        provider: Provider | None = {
            "/v1/messages": "anthropic",
            "/v1/responses": "responses",
            "/v1/chat/completions": "chat",
        }.get(path.rstrip("/"))  # type: ignore[assignment]
        if path.rstrip("/") == "/backend-api/codex/responses":  # a ChatGPT plan's backend (Codex signed in)
            provider = "responses"
        step: Step | None = None
        index: int | None = None
        with self._lock:
            if provider is not None and request.method == "POST" and _takes_step(provider, body):
                index = self.taken[provider]
                if index < len(self.scripts[provider]):
                    step = self.scripts[provider][index]
                    self.taken[provider] += 1
                else:
                    index = None
            elif provider is not None and self.untaken.get(provider):
                step = self.untaken[provider].pop(0)
            self.requests.append(
                Recorded(request.method, path, request.query_string,
                         {k.lower(): v for k, v in request.headers.items()}, body, index)
            )  # fmt: skip
        if provider is None:
            return self._side(request, body)
        if request.method != "POST" or not isinstance(body, dict):
            return self._error_response(provider, Error(400))
        if isinstance(step, Error):
            return self._error_response(provider, step)
        reply = step if isinstance(step, Reply) else Reply(text=FINAL_TEXT)
        model = reply.model or str(body.get("model") or DEFAULT_MODEL)
        stream = bool(body.get("stream"))
        if provider == "anthropic":
            return await self._anthropic(request, reply, model, stream)
        if provider == "responses":
            return await self._responses(request, reply, model, stream)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._chat(request, reply, model, stream, include_usage)

    def _side(self, request: web.Request, body: Any) -> web.Response:
        path = request.path.rstrip("/")
        if path == "/oauth/token" and request.method == "POST" and self.token_answer is not None:
            return web.json_response(self.token_answer)
        if path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": len(json.dumps(body or {})) // 4})
        if path == "/v1/models" and request.method == "GET":
            model = {"id": DEFAULT_MODEL, "type": "model", "object": "model", "display_name": DEFAULT_MODEL,
                     "created_at": "2025-01-01T00:00:00Z", "created": 0, "owned_by": "scripted"}  # fmt: skip
            return web.json_response(
                {"object": "list", "data": [model], "has_more": False, "first_id": DEFAULT_MODEL,
                 "last_id": DEFAULT_MODEL}
            )  # fmt: skip
        return web.json_response({"error": {"type": "not_found_error", "message": f"no route {path}"}}, status=404)

    def _error_response(self, provider: Provider, error: Error) -> web.Response:
        body = error.body
        if body is None:
            body = anthropic_error(error.status) if provider == "anthropic" else openai_error(error.status)
        return web.json_response(body, status=error.status, headers=error.headers)

    async def _send(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        for chunk in events:
            await response.write(chunk)
        await response.write_eof()
        return response

    # -- Anthropic Messages ---------------------------------------------------------------------------
    def _anthropic_blocks(self, reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        blocks += [
            {"type": "tool_use", "id": self._next_id("toolu"), "name": c.name, "input": c.input}
            for c in reply.tool_calls
        ]
        return blocks or [{"type": "text", "text": FINAL_TEXT}]

    async def _anthropic(self, request: web.Request, reply: Reply, model: str, stream: bool) -> web.StreamResponse:
        u = reply.usage
        usage = {"input_tokens": u.input_tokens, "cache_creation_input_tokens": u.cache_write_tokens,
                 "cache_read_input_tokens": u.cache_read_tokens, "output_tokens": u.output_tokens}  # fmt: skip
        blocks = self._anthropic_blocks(reply)
        stop = "tool_use" if reply.tool_calls else "end_turn"
        message = {"id": self._next_id("msg"), "type": "message", "role": "assistant", "model": model,
                   "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}  # fmt: skip
        if not stream:
            return web.json_response(message)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [_sse("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
            else:
                opening = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events += [
                _sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": opening}),
                _sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
                _sse("content_block_stop", {"type": "content_block_stop", "index": i}),
            ]
        events += [
            _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": u.output_tokens}}),
            _sse("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        return await self._send(request, events)

    # -- OpenAI Responses -----------------------------------------------------------------------------
    async def _responses(self, request: web.Request, reply: Reply, model: str, stream: bool) -> web.StreamResponse:
        u = reply.usage
        items: list[dict[str, Any]] = [
            {"type": "custom_tool_call", "id": self._next_id("ctc"), "call_id": self._next_id("call"), "name": c.name,
             "input": c.input, "status": "completed"} if isinstance(c.input, str) else
            {"type": "function_call", "id": self._next_id("fc"), "call_id": self._next_id("call"), "name": c.name,
             "arguments": json.dumps(c.input), "status": "completed"}
            for c in reply.tool_calls
        ]  # fmt: skip
        if reply.text or not items:
            text = reply.text or FINAL_TEXT
            items.insert(0, {"type": "message", "id": self._next_id("msg"), "role": "assistant", "status": "completed",
                             "content": [{"type": "output_text", "text": text, "annotations": []}]})  # fmt: skip
        usage = {
            "input_tokens": u.input_tokens + u.cache_read_tokens,
            "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
        }
        rid = self._next_id("resp")
        base = {"id": rid, "object": "response", "created_at": 1_700_000_000, "model": model, "error": None}
        done = {**base, "status": "completed", "output": items, "usage": usage}
        if not stream:
            return web.json_response(done)
        seq = iter(range(10_000))
        events = [_sse("response.created", {"type": "response.created", "sequence_number": next(seq),
                                            "response": {**base, "status": "in_progress", "output": []}})]  # fmt: skip
        for i, item in enumerate(items):
            pending = {**item, "status": "in_progress"}
            if item["type"] == "message":
                pending["content"] = []
            elif item["type"] == "custom_tool_call":
                pending["input"] = ""
            else:
                pending["arguments"] = ""
            events.append(_sse("response.output_item.added", {"type": "response.output_item.added",
                               "sequence_number": next(seq), "output_index": i, "item": pending}))  # fmt: skip
            if item["type"] == "message":
                events.append(_sse("response.output_text.delta", {"type": "response.output_text.delta",
                                   "sequence_number": next(seq), "item_id": item["id"], "output_index": i,
                                   "content_index": 0, "delta": item["content"][0]["text"]}))  # fmt: skip
            elif item["type"] == "custom_tool_call":
                events.append(_sse("response.custom_tool_call_input.delta", {
                    "type": "response.custom_tool_call_input.delta", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": i, "delta": item["input"]}))  # fmt: skip
            else:
                events.append(_sse("response.function_call_arguments.delta", {
                    "type": "response.function_call_arguments.delta", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": i, "delta": item["arguments"]}))  # fmt: skip
            events.append(_sse("response.output_item.done", {"type": "response.output_item.done",
                               "sequence_number": next(seq), "output_index": i, "item": item}))  # fmt: skip
        events.append(_sse("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                                  "response": done}))  # fmt: skip
        return await self._send(request, events)

    # -- Chat Completions -------------------------------------------------------------------------------
    async def _chat(
        self, request: web.Request, reply: Reply, model: str, stream: bool, include_usage: bool
    ) -> web.StreamResponse:
        u = reply.usage
        usage = {
            "prompt_tokens": u.input_tokens + u.cache_read_tokens,
            "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        }
        calls = [
            {"id": self._next_id("call"), "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.input)}}
            for c in reply.tool_calls
        ]  # fmt: skip
        text = reply.text or ("" if calls else FINAL_TEXT)
        finish = "tool_calls" if calls else "stop"
        cid = self._next_id("chatcmpl")
        base = {"id": cid, "created": 1_700_000_000, "model": model}
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return web.json_response({**base, "object": "chat.completion", "usage": usage, "choices": [choice]})

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _sse(None, {**base, "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})  # fmt: skip

        events = [chunk({"role": "assistant", "content": ""})]
        if text:
            events.append(chunk({"content": text}))
        for i, call in enumerate(calls):
            events.append(chunk({"tool_calls": [{"index": i, **call}]}))
        events.append(chunk({}, finish))
        if include_usage:
            events.append(_sse(None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        events.append(_sse(None, "[DONE]"))
        return await self._send(request, events)


# -- ready scripts: edit a file, commit it, report done ---------------------------------------------------


def done_status(summary: str) -> str:
    return json.dumps({"state": "done", "summary": summary, "next": ""})


def task_commands(path: str, content: str, message: str, summary: str) -> list[str]:
    """Shell commands (run in /workspace) that edit `path`, commit it and write the done report."""
    q = shlex.quote
    return [
        f"printf '%s' {q(content)} > {q(path)}",
        f"git add {q(path)} && git commit -q -m {q(message)}",
        f"printf '%s' {q(done_status(summary))} > \"$HARNESS_STATUS_FILE\"",
    ]


def claude_code_script(
    path: str = "hello.txt", content: str = "hello from the scripted model\n", message: str = "Add hello.txt",
    summary: str = "added hello.txt", *, usage: Usage | None = None, model: str | None = None,
) -> list[Step]:  # fmt: skip
    """Anthropic steps: one `Bash` tool_use per command, then a final text."""
    u = usage or Usage()
    steps: list[Step] = [
        Reply(tool_calls=(ToolCall("Bash", {"command": cmd, "description": f"step {i + 1}"}),), usage=u, model=model)
        for i, cmd in enumerate(task_commands(path, content, message, summary))
    ]
    return [*steps, Reply(text="Done: " + summary, usage=u, model=model)]


def codex_script(
    path: str = "hello.txt", content: str = "hello from the scripted model\n", message: str = "Add hello.txt",
    summary: str = "added hello.txt", *, usage: Usage | None = None, model: str | None = None,
    code_mode: bool = False,
) -> list[Step]:  # fmt: skip
    """Responses steps: one `exec_command` function call ({"cmd": ...}) per command, then a final text.

    With `code_mode` (what Codex 0.169 offers its own default model, i.e. when no --model is given) each
    command goes through its freeform JavaScript `exec` tool instead: `await tools.exec_command({cmd})`."""
    u = usage or Usage()
    commands = task_commands(path, content, message, summary)
    calls = [
        ToolCall("exec", f"text(await tools.exec_command({json.dumps({'cmd': cmd})}));")
        if code_mode else ToolCall("exec_command", {"cmd": cmd})
        for cmd in commands
    ]  # fmt: skip
    steps: list[Step] = [Reply(tool_calls=(call,), usage=u, model=model) for call in calls]
    return [*steps, Reply(text="Done: " + summary, usage=u, model=model)]


def aider_script(
    path: str = "hello.txt", content: str = "hello from the scripted model\n", summary: str = "added hello.txt",
    *, status_path: str = ".harness-status.json", edit_format: Literal["whole", "diff"] = "whole",
    usage: Usage | None = None, model: str | None = None,
) -> list[Step]:  # fmt: skip
    """Chat steps: one reply whose edit blocks create `path` and write the done report into the status
    file (the aider adapter adds `.harness-status.json` with --file and delivers it to $HARNESS_STATUS_FILE).
    aider picks "whole" for a model it does not know (like the stand-in's) and "diff" for many it does."""
    files = [(path, content.rstrip("\n")), (status_path, done_status(summary))]
    if edit_format == "whole":
        blocks = [f"{name}\n```\n{body}\n```" for name, body in files]
    else:
        blocks = [f"{name}\n```\n<<<<<<< SEARCH\n=======\n{body}\n>>>>>>> REPLACE\n```" for name, body in files]
    text = "I will create the file and report.\n\n" + "\n\n".join(blocks) + "\n"
    return [Reply(text=text, usage=usage or Usage(), model=model)]


def iter_sse(raw: bytes) -> Iterator[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body, for the stand-in's own tests."""
    for block in raw.decode().split("\n\n"):
        event = None
        data = []
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            yield event, "\n".join(data)
