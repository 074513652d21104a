"""Usage limits are read from the provider's structured answer only, and the latest reset of the spent windows wins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from runner.gateway.usage_limits import UsageLimit, usage_limit

NOW = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


def epoch(delta: timedelta) -> str:
    return str(int((NOW + delta).timestamp()))


def test_a_rejected_five_hour_window_is_a_usage_limit_until_its_reset() -> None:
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": epoch(timedelta(hours=3)),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-reset": epoch(timedelta(hours=3, minutes=10)),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-reset": epoch(timedelta(days=4)),
    }
    assert usage_limit("anthropic", 429, headers, b"", now=NOW) == UsageLimit(
        NOW + timedelta(hours=3, minutes=10), "5-hour"
    )


def test_with_several_windows_spent_the_latest_reset_wins() -> None:
    headers = {
        "Anthropic-Ratelimit-Unified-Status": "rejected",
        "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-reset": epoch(timedelta(hours=2)),
        "anthropic-ratelimit-unified-7d-status": "rejected",
        "anthropic-ratelimit-unified-7d-reset": epoch(timedelta(days=2)),
    }
    assert usage_limit("anthropic", 429, headers, b"", now=NOW) == UsageLimit(NOW + timedelta(days=2), "weekly")


def test_without_per_window_headers_the_overall_reset_then_retry_after_serve() -> None:
    overall = {"anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": epoch(
        timedelta(minutes=30)), "anthropic-ratelimit-unified-representative-claim": "seven_day"}  # fmt: skip
    assert usage_limit("anthropic", 429, overall, b"", now=NOW) == UsageLimit(NOW + timedelta(minutes=30), "weekly")
    retry = {"anthropic-ratelimit-unified-status": "rejected", "retry-after": "7999"}
    assert usage_limit("anthropic", 429, retry, b"", now=NOW) == UsageLimit(NOW + timedelta(seconds=7999), None)
    bare = {"anthropic-ratelimit-unified-status": "rejected"}
    assert usage_limit("anthropic", 429, bare, b"", now=NOW) == UsageLimit(None, None)


def test_throttles_and_other_answers_are_not_usage_limits() -> None:
    rejected = {"anthropic-ratelimit-unified-status": "rejected", "retry-after": "60"}
    assert usage_limit("anthropic", 429, rejected, b"", now=NOW) is not None  # control: the same headers on a 429
    assert usage_limit("anthropic", 529, rejected, b"", now=NOW) is None  # overloaded: transient
    assert usage_limit("anthropic", 200, rejected, b"", now=NOW) is None
    plain = {"anthropic-ratelimit-unified-status": "allowed_warning", "retry-after": "60"}
    assert usage_limit("anthropic", 429, plain, b'{"error":{"type":"rate_limit_error"}}', now=NOW) is None
    assert usage_limit("openai", 429, {}, b'{"error":{"type":"rate_limit_exceeded","message":"usage limit"}}',
                       now=NOW) is None  # fmt: skip


def test_an_openai_usage_limit_resets_at_its_resets_at() -> None:
    error = {"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": "plus",
             "resets_at": int(epoch(timedelta(hours=1)))}  # fmt: skip
    body = json.dumps({"error": error}).encode()
    assert usage_limit("openai", 429, {}, body, now=NOW) == UsageLimit(NOW + timedelta(hours=1), "plus plan")
    relative = json.dumps({"error": {"type": "usage_limit_reached", "resets_in_seconds": 90}}).encode()
    assert usage_limit("openai", 429, {}, relative, now=NOW) == UsageLimit(NOW + timedelta(seconds=90), None)


def test_an_implausible_reset_is_not_believed() -> None:
    for value in ("nan", "1e300", "-5", epoch(timedelta(days=400)), epoch(-timedelta(days=1)), "soon"):
        headers = {"anthropic-ratelimit-unified-status": "rejected", "anthropic-ratelimit-unified-reset": value}
        assert usage_limit("anthropic", 429, headers, b"", now=NOW) == UsageLimit(None, None), value
    body = json.dumps({"error": {"type": "usage_limit_reached", "resets_at": "tomorrow", "plan_type": "x\ny"}})
    assert usage_limit("openai", 429, {}, body.encode(), now=NOW) == UsageLimit(None, None)
    assert usage_limit("openai", 429, {}, b"not json", now=NOW) is None
