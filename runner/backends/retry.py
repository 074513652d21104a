"""The one retry policy of engine and cluster calls (design §5): transient infrastructure faults only
(a lost connection, a 5xx, a 429), bounded by attempts and by time; never an agent's command."""

from __future__ import annotations

import logging

from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from runner.base.errors import HarnessError, TransientBackendError

log = logging.getLogger(__name__)


def _say_retry(state: RetryCallState) -> None:
    """One plain line per retry: the fault in the harness's words, not tenacity's function repr."""
    fault = state.outcome.exception() if state.outcome else None
    why = fault.message if isinstance(fault, HarnessError) else str(fault)
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; retrying in %.1f s (attempt %d)", why, wait, state.attempt_number + 1)


retry_transient = retry(
    retry=retry_if_exception_type(TransientBackendError),
    stop=stop_after_attempt(5) | stop_after_delay(60),
    wait=wait_exponential(multiplier=0.5, max=10),
    before_sleep=_say_retry,
    reraise=True,
)
