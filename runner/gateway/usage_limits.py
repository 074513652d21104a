"""Usage limits as facts: what a provider's answer says about a subscription's window, and nothing guessed.

A usage limit is a subscription's window that is spent (Claude's 5-hour or weekly window, a ChatGPT plan's):
the run should wait until it reopens. It is known only from the provider's structured answer:

- Anthropic: a 429 whose `anthropic-ratelimit-unified-status` is `rejected`. The reset is the latest
  `anthropic-ratelimit-unified-<window>-reset` among the windows whose own status is `rejected` (several can be
  spent at once, and the run can go on only when all have reopened), else `anthropic-ratelimit-unified-reset`,
  else `retry-after`.
- OpenAI: a 429 whose error is `usage_limit_reached`, with `resets_at` (epoch seconds) or `resets_in_seconds`.

Anything else is not a usage limit: a 529 `overloaded_error` or a plain 429 is a throttle that ordinary backoff
rides out, and text an agent prints ("usage limit reached") is never read as one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runner.gateway.routes import Provider

UNIFIED = "anthropic-ratelimit-unified-"
# Window names as the headers spell them, and as a person reads them.
_WINDOW_NAMES = {
    "5h": "5-hour", "five_hour": "5-hour", "7d": "weekly", "seven_day": "weekly", "7d_opus": "weekly Opus",
    "seven_day_opus": "weekly Opus", "7d_sonnet": "weekly Sonnet", "seven_day_sonnet": "weekly Sonnet",
    "overage": "extra usage",
}  # fmt: skip
_WINDOW = re.compile(rf"{UNIFIED}([a-z0-9_]{{1,32}})-(status|reset)")
MAX_ERROR_BODY = 64 * 1024  # an error answer longer than this is not read for a limit
MAX_RESET = timedelta(days=31)  # a reset further than this is not believed


@dataclass(frozen=True)
class UsageLimit:
    resets_at: datetime | None  # None: the provider did not say; the run probes for room
    window: str | None  # as a person reads it: "5-hour", "weekly", ...


def window_label(name: str | None) -> str | None:
    return None if name is None else _WINDOW_NAMES.get(name, name.replace("_", " "))


def usage_limit(
    provider: Provider, status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> UsageLimit | None:
    """The usage limit an answer reports, or None when it reports none (any other answer, a throttle included)."""
    if status != 429:
        return None
    now = now or datetime.now(UTC)
    lower = {k.lower(): v for k, v in headers.items()}
    if provider == "anthropic":
        return _anthropic(lower, now)
    return _openai(body, now)


def _anthropic(headers: Mapping[str, str], now: datetime) -> UsageLimit | None:
    if headers.get(UNIFIED + "status", "").strip().lower() != "rejected":
        return None
    windows: dict[str, dict[str, str]] = {}
    for name, value in headers.items():
        if m := _WINDOW.fullmatch(name):
            windows.setdefault(m.group(1), {})[m.group(2)] = value
    rejected = [
        (reset, window)
        for window, fields in windows.items()
        if fields.get("status", "").strip().lower() == "rejected"
        and (reset := _epoch(fields.get("reset"), now)) is not None
    ]
    if rejected:
        reset, window = max(rejected)
        return UsageLimit(reset, window_label(window))
    claim = window_label(headers.get(UNIFIED + "representative-claim", "").strip() or None)
    reset = _epoch(headers.get(UNIFIED + "reset"), now) or _after(headers.get("retry-after"), now)
    return UsageLimit(reset, claim)


def _openai(body: bytes, now: datetime) -> UsageLimit | None:
    if len(body) > MAX_ERROR_BODY:
        return None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or "usage_limit_reached" not in (error.get("type"), error.get("code")):
        return None
    reset = _epoch(error.get("resets_at"), now)
    if reset is None and isinstance(error.get("resets_in_seconds"), int | float):
        reset = _after(str(error["resets_in_seconds"]), now)
    plan = error.get("plan_type")
    return UsageLimit(reset, f"{plan} plan" if isinstance(plan, str) and plan.isidentifier() else None)


def _epoch(value: object, now: datetime) -> datetime | None:
    """A reset given as epoch seconds, when it is a plausible moment (not past, not beyond a month)."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    try:
        at = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return at if now - timedelta(minutes=5) <= at <= now + MAX_RESET else None


def _after(value: str | None, now: datetime) -> datetime | None:
    """A reset given as seconds from now (`retry-after`'s delta form)."""
    try:
        seconds = float((value or "").strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RESET.total_seconds():
        return None
    return now + timedelta(seconds=seconds)
