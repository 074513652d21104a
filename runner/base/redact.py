"""Redaction of secret values (`--env NAME`) from everything the harness keeps or shows.

Values are also caught when printed in pieces (a sliding window holds back the bytes that could
start a secret) and base64-encoded at any alignment.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from runner.base.output import OutputSink

MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary text; they are refused at the CLI
MIN_ENCODED_LENGTH = 6


def _base64_forms(secret: bytes) -> set[bytes]:
    """The base64 characters that depend only on `secret`, for each of the three alignments."""
    forms = set()
    for variant in (base64.b64encode, base64.urlsafe_b64encode):
        for k in range(3):
            encoded = variant(b"\0" * k + secret).rstrip(b"=")
            start = -(-8 * k // 6)  # ceil: the first character made only of secret bits
            end = 8 * (k + len(secret)) // 6
            inner = encoded[start:end]
            if len(inner) >= MIN_ENCODED_LENGTH:
                forms.add(inner)
    return forms


class Redactor:
    """Replaces every form of the given secrets with `[REDACTED:NAME]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        patterns: dict[bytes, bytes] = {}
        for name, value in secrets.items():
            raw = value.encode()
            if len(raw) < MIN_SECRET_LENGTH:
                continue
            marker = f"[REDACTED:{name}]".encode()
            patterns[raw] = marker
            for form in _base64_forms(raw):
                patterns.setdefault(form, marker)
        # Longest first, so a value is replaced whole before any shorter form inside it.
        self.patterns = sorted(patterns.items(), key=lambda item: -len(item[0]))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def pending(self, data: bytes) -> int:
        """How many bytes at the end of `data` could begin a secret that more bytes would complete:
        the longest suffix that is a proper prefix of some form (0 when none is)."""
        if not data:
            return 0
        last = data[-1]
        longest = 0
        for pattern, _ in self.patterns:
            # Candidate prefix ends are where the pattern has `data`'s last byte, longest first.
            end = pattern.rfind(last, 0, len(pattern) - 1)
            while end + 1 > longest:
                if end + 1 <= len(data) and data.endswith(pattern[: end + 1]):
                    longest = end + 1
                    break
                end = pattern.rfind(last, 0, end)
        return longest

    def bytes(self, data: bytes) -> bytes:
        for pattern, marker in self.patterns:
            data = data.replace(pattern, marker)
        return data

    def text(self, text: str) -> str:
        return self.bytes(text.encode()).decode("utf-8", "replace") if self.patterns else text


class RedactingSink:
    """An output sink that redacts across chunk boundaries before passing bytes on."""

    def __init__(self, redactor: Redactor, inner: OutputSink) -> None:
        self.redactor = redactor
        self.inner = inner
        self._held = b""

    def write(self, chunk: bytes) -> None:
        data = self.redactor.bytes(self._held + chunk)
        # Hold back only what could be the start of a secret that the next chunk completes: a
        # line that cannot reaches the log now, not when the agent next prints.
        cut = len(data) - self.redactor.pending(data)
        self._held = data[cut:]
        if cut:
            self.inner.write(data[:cut])

    def flush(self) -> None:
        if self._held:
            self.inner.write(self.redactor.bytes(self._held))
            self._held = b""
