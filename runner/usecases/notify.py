"""Notifications (`--notify`): the session's report, as JSON, to a command or a webhook, sent by the supervisor on
the host (never from a container), in threads of its own.

The loop says when (runner/loop/supervisor.py, `Notifier`: the run's end, a usage-limit wait); this module decides
whether the event is selected (`--notify-on`), builds what is sent (the report `harness report --session S --json`
prints, with an `event` key), delivers it to each target with a few bounded retries (tenacity), and records each
delivery in the journal (notifications.json). A failure to notify is logged and recorded, never raised: the run's
outcome does not change. It lives with the use cases, not in the loop, because what it sends is the report
(runner.usecases.report), which the loop may not import: the session's driver (runner/usecases/sessions.py) builds
it and hands it to the supervisor.

Secrets: a target's URL (its path, query, user and password) and a command's arguments are secrets; logs and the
journal name a target by `NotifyTarget.shown` only, and whatever a delivery prints or raises passes a Redactor.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_base, wait_exponential

from runner.base.errors import HarnessError, JournalError
from runner.base.redact import Redactor
from runner.record.journal import Journal
from runner.record.models import NotificationRecord, NotifyEvent, RunState, RunSummary
from runner.record.notify import NotifyTarget, load_targets, parse_target
from runner.usecases.report import ReportRequest, build_report

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # one POST
CMD_TIMEOUT = 30.0  # one run of a cmd: target (then its process group is killed)
ATTEMPTS = 3
RETRY_WINDOW = 45.0  # no attempt starts later than this after the first
JOIN_SECONDS = 90.0  # the most the end of a run waits for its notifications to be sent
OUTPUT_CAP = 4096  # bytes of a command's output kept in the journal
RESPONSE_CAP = 64 * 1024
PRIORITY = {NotifyEvent.BLOCKED: "high", NotifyEvent.FAILURES: "high", NotifyEvent.BUDGET: "high"}


class DeliveryError(Exception):
    """One attempt failed; `transient`: worth another (a 5xx, a 429, no answer, a command that failed)."""

    def __init__(self, message: str, *, transient: bool, attempt: Attempt | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.attempt = attempt or Attempt()


@dataclass
class Attempt:
    http_status: int | None = None
    exit_code: int | None = None
    output: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is refused: the body (and a URL's credentials) go to the host given, or nowhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _say_retry(target: NotifyTarget, redactor: Redactor) -> Any:
    def say(state: RetryCallState) -> None:
        fault = state.outcome.exception() if state.outcome else None
        why = redactor.text(fault.message) if isinstance(fault, DeliveryError) else "failed"
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("notification to %s: %s; retrying in %.1f s", target.shown, why, wait)

    return say


class SessionNotifier:
    """Sends a session's notifications (runner.loop.supervisor.Notifier); `close()` waits for them, bounded."""

    def __init__(
        self,
        *,
        journal: Journal,
        repo: Path,
        targets: Sequence[NotifyTarget],
        events: Iterable[NotifyEvent],
        wait: wait_base | None = None,
    ) -> None:
        self.journal = journal
        self.repo = repo
        self.targets = list(targets)
        self.events = frozenset(events)
        self.wait = wait or wait_exponential(multiplier=1, max=8)
        secrets = {f"{name}-{i}": value for i, t in enumerate(self.targets) for name, value in t.secrets().items()}
        self.redactor = Redactor(secrets)
        self._threads: list[threading.Thread] = []

    def selected(self, event: NotifyEvent, summary: RunSummary) -> bool:
        """Whether the event is sent: chosen by name, or an end of the run with `end` chosen."""
        ended = summary.status is not RunState.RUNNING
        return event in self.events or (ended and NotifyEvent.END in self.events)

    def send(self, event: NotifyEvent, summary: RunSummary) -> None:
        if not self.targets or not self.selected(event, summary):
            return
        thread = threading.Thread(
            target=self._deliver_all, args=(event, summary), name=f"notify-{event.value}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def close(self, timeout: float = JOIN_SECONDS) -> None:
        """Wait for the notifications still being sent, at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("a notification was still being sent after %.0f s: abandoned", timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _deliver_all(self, event: NotifyEvent, summary: RunSummary) -> None:
        data = self._payload(event, summary)
        senders = [
            threading.Thread(target=self._deliver, args=(event, summary, target, data), daemon=True)
            for target in self.targets
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    def _payload(self, event: NotifyEvent, summary: RunSummary) -> dict[str, Any]:
        """The session's report as `harness report --json` prints it, with the event; the summary's main facts
        when the report cannot be made."""
        try:
            report = build_report(ReportRequest(repo=self.repo, session=summary.session_id))
            data: dict[str, Any] = report.model_dump(mode="json", by_alias=True)
        except Exception as exc:  # the report is a courtesy: a notification goes out without it
            why = exc.message if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
            log.warning("notification: the report could not be made (%s): sending the summary's facts", why)
            data = {
                "kind": "solo-harness.report",
                "sessionId": summary.session_id,
                "repo": summary.repo,
                "status": summary.status.value,
                "stopReason": summary.stop_reason.value if summary.stop_reason else None,
                "verdict": summary.status.value,
                "error": summary.error,
                "iterationCount": summary.iteration_count,
                "maxIterations": summary.max_iterations,
                "branch": summary.worktree.branch,
                "headCommit": summary.head_commit,
                "usage": summary.usage.model_dump(mode="json", by_alias=True),
            }
        return {"event": event.value, **data}

    def _deliver(self, event: NotifyEvent, summary: RunSummary, target: NotifyTarget, data: dict[str, Any]) -> None:
        started = time.monotonic()
        attempts = 0
        last = Attempt()

        def once() -> Attempt:
            nonlocal attempts
            attempts += 1
            return self._attempt(event, summary, target, data)

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryError) and exc.transient),
            stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(RETRY_WINDOW),
            wait=self.wait,
            before_sleep=_say_retry(target, self.redactor),
            reraise=True,
        )
        error = None
        try:
            last = retrying(once)
        except DeliveryError as exc:
            error, last = self.redactor.text(exc.message), exc.attempt
        except Exception as exc:
            error = self.redactor.text(f"{type(exc).__name__}: {exc}")
        record = NotificationRecord(
            event=event,
            target=target.shown,
            iteration=summary.last_iteration,
            state=summary.status,
            attempts=attempts,
            delivered=error is None,
            error=error,
            http_status=last.http_status,
            exit_code=last.exit_code,
            output=self.redactor.text(last.output) if last.output is not None else None,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        if error is None:
            log.info("session %s: %s notification sent to %s", summary.session_id, event.value, target.shown)
        else:
            log.warning("session %s: the %s notification to %s failed after %d attempt(s): %s",
                        summary.session_id, event.value, target.shown, attempts, error)  # fmt: skip
        try:
            self.journal.add_notification(record)
        except (JournalError, OSError) as exc:
            log.warning("session %s: the notification could not be recorded: %s", summary.session_id, exc)

    def _attempt(self, event: NotifyEvent, summary: RunSummary, target: NotifyTarget, data: dict[str, Any]) -> Attempt:
        if target.kind == "cmd":
            return _run_command(target, _body(data), _command_env(event, summary, self.journal, data), self.repo)
        headers = {"User-Agent": "solo-harness", "X-Harness-Event": event.value}
        if target.kind == "slack":
            body = json.dumps({"text": _text(event, data)}).encode()
            headers["Content-Type"] = "application/json"
        elif target.kind == "ntfy":
            body = _text(event, data).encode()
            headers.update({"Title": _title(event, data), "Tags": "robot", "Priority": PRIORITY.get(event, "default")})
        else:
            body = _body(data)
            headers["Content-Type"] = "application/json"
        return _post(target, body, headers)


def _body(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _title(event: NotifyEvent, data: dict[str, Any]) -> str:
    what = "waits for a usage limit" if data.get("status") == "running" else str(data.get("status"))
    return f"harness: {data.get('sessionId')} {what}"


def _text(event: NotifyEvent, data: dict[str, Any]) -> str:
    """The one message a person reads (Slack, ntfy)."""
    usage = data.get("usage") or {}
    lines = [
        f"{_title(event, data)} ({event.value}): {data.get('verdict')}",
        f"iterations {data.get('iterationCount')}/{data.get('maxIterations')}, "
        f"cost ${float(usage.get('costUsd') or 0):.2f}, branch {data.get('branch')}",
    ]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


def _command_env(event: NotifyEvent, summary: RunSummary, journal: Journal, data: dict[str, Any]) -> dict[str, str]:
    """The state a cmd: target gets in `HARNESS_*` variables (docs/overnight.md), over the harness's own
    environment."""
    until = summary.usage_limit.until
    return {
        **os.environ,
        "HARNESS_EVENT": event.value,
        "HARNESS_SESSION": summary.session_id,
        "HARNESS_STATE": summary.status.value,
        "HARNESS_STOP_REASON": summary.stop_reason.value if summary.stop_reason else "",
        "HARNESS_OUTCOME": summary.last_outcome.value if summary.last_outcome else "",
        "HARNESS_VERDICT": str(data.get("verdict") or ""),
        "HARNESS_ITERATIONS": str(summary.iteration_count),
        "HARNESS_MAX_ITERATIONS": str(summary.max_iterations),
        "HARNESS_COST_USD": f"{summary.usage.cost_usd:.4f}",
        "HARNESS_BRANCH": summary.worktree.branch,
        "HARNESS_REPO": summary.repo,
        "HARNESS_JOURNAL_DIR": str(journal.dir),
        "HARNESS_LIMIT_UNTIL": until.isoformat(timespec="seconds") if until else "",
    }


def _post(target: NotifyTarget, body: bytes, headers: dict[str, str]) -> Attempt:
    assert target.url is not None  # noqa: S101 - every target but cmd: has one
    request = urllib.request.Request(target.url, data=body, method="POST", headers=headers)  # noqa: S310 - http(s) only
    if target.auth is not None:
        token = base64.b64encode(":".join(target.auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            response.read(RESPONSE_CAP)
            return Attempt(http_status=response.status)
    except urllib.error.HTTPError as exc:
        transient = exc.code >= 500 or exc.code in {408, 429}
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", transient=transient,
                            attempt=Attempt(http_status=exc.code)) from None  # fmt: skip
    except urllib.error.URLError as exc:
        raise DeliveryError(f"no answer from {target.shown}: {exc.reason}", transient=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"no answer from {target.shown}: {exc}", transient=True) from None


def _run_command(target: NotifyTarget, body: bytes, env: dict[str, str], cwd: Path) -> Attempt:
    """Run a cmd: target on the host with the JSON on stdin, in a process group of its own, killed at the timeout."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                target.argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            raise DeliveryError(f"cannot run the command: {exc.strerror}", transient=False) from None
        timed_out = False
        try:
            proc.communicate(body, timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        raw = out.read(OUTPUT_CAP + 1)
    output = raw[:OUTPUT_CAP].decode("utf-8", "replace") + ("\n[truncated]" if len(raw) > OUTPUT_CAP else "")
    attempt = Attempt(exit_code=None if timed_out else proc.returncode, output=output)
    if timed_out:
        raise DeliveryError(f"the command ran past {CMD_TIMEOUT:.0f} s", transient=True, attempt=attempt)
    if proc.returncode != 0:
        raise DeliveryError(f"the command exited {proc.returncode}", transient=True, attempt=attempt)
    return attempt


def session_notifier(journal: Journal, summary: RunSummary) -> SessionNotifier | None:
    """The notifier of a session whose targets the harness home keeps; None when it has none."""
    try:
        kept = load_targets(Path(summary.repo), summary.session_id)
        targets = [parse_target(text) for text in kept.targets] if kept is not None else []
    except (JournalError, ValueError) as exc:  # never keeps the run from going on: said, and nothing is sent
        log.warning("session %s: no notification will be sent: %s", summary.session_id, exc)
        return None
    if kept is None or not targets:
        return None
    return SessionNotifier(journal=journal, repo=Path(summary.repo), targets=targets, events=kept.events)
