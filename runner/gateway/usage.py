"""Token usage read from model API responses as they stream past the gateway.

Each provider reports usage in its own fields; all are normalised to `TokenUsage`, where
`input_tokens` excludes cache reads and writes (OpenAI counts cached tokens inside its input).
The meter never changes a byte of the response: it only watches. `final` says whether the answer's
closing usage arrived (Anthropic's `message_delta`, a Responses terminal event, a chat chunk with
usage, or a whole JSON answer): without it the gateway cannot know what the request cost.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from runner.record.models import TokenUsage

Api = Literal["messages", "responses", "chat"]
MAX_JSON_BODY = 16 * 1024**2  # a non-streamed body larger than this is forwarded but not parsed
MAX_SSE_EVENT = 4 * 1024**2  # an event held longer than this (no blank line yet) is dropped, not kept whole


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class UsageMeter:
    """Feed it the response bytes; ask it for the model and usage at the end."""

    def __init__(self, api: Api, *, streaming: bool, request_model: str | None) -> None:
        self.api = api
        self.streaming = streaming
        self.model = request_model
        self.usage = TokenUsage()
        self.seen = False  # a usage field was found
        self.final = False  # the answer's closing usage was found
        self._buffer = bytearray()
        self._overflow = False  # a JSON answer too large to parse
        self._skipping = False  # inside an SSE line too long to keep: dropped up to its end
        self._data: list[bytes] = []
        self._model_named = False  # the answer said which model answered

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        if not self.streaming:
            self._buffer += chunk
            if len(self._buffer) > MAX_JSON_BODY:
                self._overflow = True
                self._buffer.clear()
            return
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return
            # The event that line belonged to is lost; the meter goes on with the next line.
            self._skipping, self._data = False, []
            chunk = chunk[end + 1 :]
        self._buffer += chunk
        # Whole events only (up to the last blank line): an event never straddles two looks.
        cut = max((at + len(end) for end in (b"\n\n", b"\n\r\n") if (at := self._buffer.rfind(end)) >= 0), default=0)
        if cut:
            events = bytes(self._buffer[:cut])
            del self._buffer[:cut]
            if self._wanted(events):  # else nothing in them to count: skipped at C speed
                for line in events.split(b"\n"):
                    self._line(line.rstrip(b"\r"))
        if len(self._buffer) > MAX_SSE_EVENT:
            self._skipping = True
            self._buffer.clear()

    def finish(self) -> None:
        if self.streaming:
            if self._buffer and not self._skipping:
                for line in bytes(self._buffer).split(b"\n"):
                    self._line(line.rstrip(b"\r"))
            self._line(b"")
        elif not self._overflow and self._buffer:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                self._event(json.loads(bytes(self._buffer)))
        self._buffer.clear()

    def _wanted(self, data: bytes) -> bool:
        """Whether event data may carry what the meter reads: usage, or the model until the answer named it.
        Only those are parsed: parsing every event of a stream cost ~25 ms of CPU per MB."""
        return b'"usage"' in data or (not self._model_named and b'"model"' in data)

    def _line(self, line: bytes) -> None:
        if not line:  # end of an SSE event
            data, self._data = b"\n".join(self._data), []
            if data and self._wanted(data):
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    self._event(json.loads(data))
            return
        if line.startswith(b"data:"):
            self._data.append(line[5:].lstrip(b" "))

    def _event(self, event: Any) -> None:
        event = _dict(event)
        if self.api == "messages":
            self._anthropic(event)
        elif self.api == "responses":
            self._responses(event)
        else:
            self._chat(event)

    def _anthropic(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = _dict(event.get("message"))
            self._set_model(message.get("model"))
            self._anthropic_usage(_dict(message.get("usage")))
        elif kind == "message_delta":
            self.final = self._anthropic_usage(_dict(event.get("usage"))) or self.final
        elif kind == "message":  # a non-streamed reply
            self._set_model(event.get("model"))
            self.final = self._anthropic_usage(_dict(event.get("usage"))) or self.final

    def _anthropic_usage(self, usage: dict[str, Any]) -> bool:
        if not usage:
            return False
        self.seen = True
        # message_delta repeats cumulative counts; a field it omits keeps its earlier value.
        update = {
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "cache_read_tokens": usage.get("cache_read_input_tokens"),
            "cache_write_tokens": usage.get("cache_creation_input_tokens"),
        }
        current = self.usage.model_dump()
        current.update({k: _int(v) for k, v in update.items() if v is not None})
        self.usage = TokenUsage(**current)
        return True

    def _responses(self, event: dict[str, Any]) -> None:
        response = _dict(event.get("response")) if "response" in event else event
        if event.get("type") in {None, "response.created", "response.completed", "response.incomplete",
                                 "response.failed", "response.in_progress"}:  # fmt: skip
            self._set_model(response.get("model"))
        usage = _dict(response.get("usage"))
        if usage:
            cached = _int(_dict(usage.get("input_tokens_details")).get("cached_tokens"))
            self._openai_usage(
                _int(usage.get("input_tokens")),
                cached,
                _int(usage.get("output_tokens")),
                _int(_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
            )

    def _chat(self, event: dict[str, Any]) -> None:
        self._set_model(event.get("model"))
        usage = _dict(event.get("usage"))
        if usage:
            self._openai_usage(
                _int(usage.get("prompt_tokens")),
                _int(_dict(usage.get("prompt_tokens_details")).get("cached_tokens")),
                _int(usage.get("completion_tokens")),
                _int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens")),
            )

    def _openai_usage(self, prompt: int, cached: int, output: int, reasoning: int) -> None:
        # OpenAI reports usage once, at the end (a terminal Responses event, the last chat chunk).
        self.seen = self.final = True
        self.usage = TokenUsage(
            input_tokens=max(0, prompt - cached),
            cache_read_tokens=min(cached, prompt),
            output_tokens=output,
            reasoning_tokens=reasoning,
        )

    def _set_model(self, model: Any) -> None:
        if isinstance(model, str) and model and len(model) <= 200:
            self.model = model
            self._model_named = True
