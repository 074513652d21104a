"""Notifications (`--notify`): the session's report, as JSON, to a command or a webhook, sent by the supervisor on
the host (never from a container), in threads of its own.

The loop says when (runner/loop/supervisor.py, `Notifier`: the run's end, a usage-limit wait); this module decides
whether the event is selected (`--notify-on`), builds what is sent (the report `harness report --session S --json`
prints, with an `event` key), delivers it to each target with a few bounded retries (tenacity), and records each
delivery in the journal (notifications.json). A failure to notify is logged and recorded, never raised: the run's
outcome does not change. It lives with the use cases, not in the loop, because what it sends is the report
(runner.usecases.report), which the loop may not import: the session's driver (runner/usecases/sessions.py) builds
it and hands it to the supervisor.

An end is told at least once: what it owes the targets (`EndNotice`: the event, the targets not yet told) is
written with the end itself (the loop asks `SessionNotifier.owe`), and `tell_session_end` sends it once the session's
slot is given back and records what is still owed, so that a supervisor that dies before it is sent leaves it to
`resume` or the user service (runner/usecases/autoresume.py). A race (runner/usecases/race.py) tells its end the same
way, from its own supervisor (`tell_race_end`: the race's status, its winners or why it has none), in race.json; its
racers send only the other events chosen, each naming the race. Both go through one `Sender`, which delivers,
retries and records whatever it is given, and one `_tell`, which sends what a notice still owes.

Why one module of this size: what is sent (a session's report, a race's status), how it is sent (webhook shapes,
a command's run, the retries) and how it is recorded and redacted are one promise, that a notification never
shows a secret nor changes an outcome; split, each part would have to be read with the others to check it.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_base, wait_exponential

from runner.base.errors import HarnessError, JournalError
from runner.base.redact import Redactor
from runner.record.journal import Journal
from runner.record.models import EndNotice, NotificationRecord, NotifyEvent, RaceRecord, RunState, RunSummary
from runner.record.notify import NotifyTarget, load_targets, parse_target
from runner.usecases.report import ReportRequest, build_report
from runner.usecases.repository import race_of

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # one POST
CMD_TIMEOUT = 30.0  # one run of a cmd: target (then its process group is killed)
ATTEMPTS = 3
RETRY_WINDOW = 45.0  # no attempt starts later than this after the first
JOIN_SECONDS = 90.0  # the most the end of a run waits for its notifications to be sent
OUTPUT_CAP = 4096  # bytes of a command's output kept in the journal
RESPONSE_CAP = 64 * 1024
RaceEnd = Literal["all-ended", "won-first", "max-cost", "stopped"]
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


@dataclass(frozen=True)
class Message:
    """One notification as every target gets it: the JSON (webhooks, a command's stdin), the text a person reads
    (Slack, ntfy), a command's `HARNESS_*` variables, and what its record in the journal says of the state."""

    event: NotifyEvent
    about: str  # for the logs: "session S", "race S"
    data: dict[str, Any]
    title: str
    text: str
    env: dict[str, str]
    iteration: int | None = None
    state: RunState | None = None
    race_end: RaceEnd | None = None
    winners: list[str] | None = None


class Sender:
    """Delivers messages to a session's (or a race's) targets, each in a thread of its own, with a few bounded
    retries (tenacity), and records each delivery in the journal; `close()` waits for them, bounded."""

    def __init__(
        self, *, journal: Journal, repo: Path, targets: Sequence[NotifyTarget], wait: wait_base | None = None
    ) -> None:
        self.journal = journal
        self.repo = repo
        self.targets = list(targets)
        self.wait = wait or wait_exponential(multiplier=1, max=8)
        secrets = {f"{name}-{i}": value for i, t in enumerate(self.targets) for name, value in t.secrets().items()}
        self.redactor = Redactor(secrets)
        self._threads: list[threading.Thread] = []
        self.delivered: set[int] = set()  # the targets (by their place in `targets`) that took a message

    def dispatch(self, event: NotifyEvent, build: Callable[[], Message]) -> None:
        """Build the message and deliver it to every target, in a thread: returns at once."""
        thread = threading.Thread(target=self._deliver_all, args=(build,), name=f"notify-{event.value}", daemon=True)
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

    def _deliver_all(self, build: Callable[[], Message]) -> None:
        message = build()
        senders = [
            threading.Thread(target=self._deliver, args=(message, target, i), daemon=True)
            for i, target in enumerate(self.targets)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    def _deliver(self, message: Message, target: NotifyTarget, place: int) -> None:
        started = time.monotonic()
        attempts = 0
        last = Attempt()

        def once() -> Attempt:
            nonlocal attempts
            attempts += 1
            return self._attempt(message, target)

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
            event=message.event,
            target=target.shown,
            iteration=message.iteration,
            state=message.state,
            race_end=message.race_end,
            winners=message.winners,
            attempts=attempts,
            delivered=error is None,
            error=error,
            http_status=last.http_status,
            exit_code=last.exit_code,
            output=self.redactor.text(last.output) if last.output is not None else None,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        if error is None:
            self.delivered.add(place)
            log.info("%s: %s notification sent to %s", message.about, message.event.value, target.shown)
        else:
            log.warning("%s: the %s notification to %s failed after %d attempt(s): %s",
                        message.about, message.event.value, target.shown, attempts, error)  # fmt: skip
        try:
            self.journal.add_notification(record)
        except (JournalError, OSError) as exc:
            log.warning("%s: the notification could not be recorded: %s", message.about, exc)

    def _attempt(self, message: Message, target: NotifyTarget) -> Attempt:
        if target.kind == "cmd":
            return _run_command(target, _body(message.data), {**os.environ, **message.env}, self.repo)
        headers = {"User-Agent": "solo-harness", "X-Harness-Event": message.event.value}
        if target.kind == "slack":
            body = json.dumps({"text": message.text}).encode()
            headers["Content-Type"] = "application/json"
        elif target.kind == "ntfy":
            body = message.text.encode()
            headers.update(
                {"Title": message.title, "Tags": "robot", "Priority": PRIORITY.get(message.event, "default")}
            )
        else:
            body = _body(message.data)
            headers["Content-Type"] = "application/json"
        return _post(target, body, headers)


class SessionNotifier(Sender):
    """Sends a session's notifications (runner.loop.supervisor.Notifier); `race`: the race it is a racer of, which
    its messages name."""

    def __init__(
        self,
        *,
        journal: Journal,
        repo: Path,
        targets: Sequence[NotifyTarget],
        events: Iterable[NotifyEvent],
        wait: wait_base | None = None,
        race: str | None = None,
    ) -> None:
        super().__init__(journal=journal, repo=repo, targets=targets, wait=wait)
        self.events = frozenset(events)
        self.race = race

    def selected(self, event: NotifyEvent, summary: RunSummary) -> bool:
        """Whether the event is sent: chosen by name, or an end of the run with `end` chosen."""
        ended = summary.status is not RunState.RUNNING
        return event in self.events or (ended and NotifyEvent.END in self.events)

    def owe(self, event: NotifyEvent, summary: RunSummary) -> EndNotice | None:
        """What the end of the run, told as `event`, owes the targets (written with the end: `tell_session_end`
        tells it); None: nothing to tell."""
        return owed_notice(event, len(self.targets), self.events)

    def send(self, event: NotifyEvent, summary: RunSummary) -> None:
        if summary.end_notice is not None and summary.status is not RunState.RUNNING:
            return  # an end owed to the targets: `tell_session_end` tells it, and records it as told
        if not self.targets or not self.selected(event, summary):
            return
        self.dispatch(event, lambda: self.message(event, summary))

    def message(self, event: NotifyEvent, summary: RunSummary) -> Message:
        data = self._payload(event, summary)
        env = _command_env(event, summary, self.journal, data)
        title = _title(event, data)
        if self.race is not None:
            data = {"event": event.value, "race": self.race, **{k: v for k, v in data.items() if k != "event"}}
            env["HARNESS_RACE"] = self.race
            title = f"harness: race {self.race}, racer {_title(event, data).removeprefix('harness: ')}"
        return Message(
            event=event, about=f"session {summary.session_id}", data=data, title=title, text=_text(event, data, title),
            env=env, iteration=summary.last_iteration, state=summary.status,
        )  # fmt: skip

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


def _body(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _title(event: NotifyEvent, data: dict[str, Any]) -> str:
    what = "waits for a usage limit" if data.get("status") == "running" else str(data.get("status"))
    return f"harness: {data.get('sessionId')} {what}"


def _text(event: NotifyEvent, data: dict[str, Any], title: str) -> str:
    """The one message a person reads (Slack, ntfy) of a session."""
    usage = data.get("usage") or {}
    lines = [
        f"{title} ({event.value}): {data.get('verdict')}",
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


def session_notifier(journal: Journal, summary: RunSummary, *, wait: wait_base | None = None) -> SessionNotifier | None:
    """The notifier of a session whose targets the harness home keeps; None when it has none."""
    try:
        kept = load_targets(Path(summary.repo), summary.session_id)
        targets = [parse_target(text) for text in kept.targets] if kept is not None else []
    except (JournalError, ValueError) as exc:  # never keeps the run from going on: said, and nothing is sent
        log.warning("session %s: no notification will be sent: %s", summary.session_id, exc)
        return None
    if kept is None or not targets:
        return None
    repo = Path(summary.repo)
    try:
        race = race_of(repo, summary.session_id)
    except HarnessError:  # a race.json that cannot be read: the racer's messages just do not name it
        race = None
    return SessionNotifier(journal=journal, repo=repo, targets=targets, events=kept.events, race=race, wait=wait)


def race_end_event(record: RaceRecord) -> NotifyEvent:
    """The notification of a race's end: `budget` when the pooled budget ended it, else `end`."""
    return NotifyEvent.BUDGET if record.end_reason == "max-cost" else NotifyEvent.END


def _race_targets(record: RaceRecord) -> tuple[list[NotifyTarget], list[NotifyEvent]] | None:
    """The race's targets as given and its events; None (said) when they cannot be read."""
    try:
        kept = load_targets(Path(record.repo), record.session_id)
        targets = [parse_target(text) for text in kept.targets] if kept is not None else []
    except (JournalError, ValueError) as exc:
        log.warning("race %s: no notification will be sent: %s", record.session_id, exc)
        return None
    return targets, list(kept.events) if kept is not None else []


def owed_notice(event: NotifyEvent, targets: int, events: Iterable[NotifyEvent]) -> EndNotice | None:
    """What an end told as `event` owes: every one of the `targets` (by place), when that event or `end` is chosen;
    None: nothing to tell."""
    if not targets or not ({event, NotifyEvent.END} & set(events)):
        return None
    return EndNotice(event=event, state="pending", owed=list(range(targets)))


def _tell(
    notice: EndNotice, targets: Sequence[NotifyTarget], sender: Callable[[list[NotifyTarget]], Sender],
    build: Callable[[], Message], about: str, session: str,
) -> EndNotice:  # fmt: skip
    """Send the end to the `targets` the notice still owes it (by place: one gone, its file unreadable, stays owed
    and unsent) through a `sender` of those, wait for the deliveries (bounded), and return what is then owed."""
    owed = [i for i in notice.owed if i < len(targets)]
    took: set[int] = set()
    if owed:
        delivering = sender([targets[i] for i in owed])
        delivering.dispatch(notice.event, build)
        delivering.close()
        took = {owed[k] for k in delivering.delivered}
    still = [i for i in notice.owed if i not in took]
    if still:
        log.warning("%s: its end was not told to %d target(s): 'harness resume --session %s' tells it again",
                    about, len(still), session)  # fmt: skip
    return notice.model_copy(
        update={"owed": still, "state": "failed" if still else "delivered", "sends": notice.sends + bool(owed)}
    )


def tell_session_end(
    journal: Journal, summary: RunSummary | None = None, *, wait: wait_base | None = None
) -> EndNotice | None:
    """Tell the run's end to every target its summary's `endNotice` still owes it, recorded in notifications.json,
    then in run-summary.json what is still owed; `summary`: the driver's own (else the journal's). Waits for the
    delivery (bounded). At least once: a sender killed before the summary says the end was delivered leaves it
    owed, and the next one (`resume`, the user service) sends it again. The caller holds the session's supervisor
    lock; SessionBusyError while another process tells it; a failure to deliver never raises."""
    with journal.notice_lock():
        summary = summary if summary is not None else journal.read_summary()
        notice, repo = summary.end_notice, Path(summary.repo)
        if notice is None or not notice.owed:
            return notice
        notifier = session_notifier(journal, summary, wait=wait) or SessionNotifier(
            journal=journal, repo=repo, targets=[], events=()
        )  # none readable: the end stays owed, unsent
        summary.end_notice = _tell(
            notice, notifier.targets,
            lambda some: SessionNotifier(journal=journal, repo=repo, targets=some, events=(), wait=wait,
                                         race=notifier.race),
            lambda: notifier.message(notice.event, summary), f"session {summary.session_id}", summary.session_id,
        )  # fmt: skip
        journal.write_summary(summary)
        return summary.end_notice


def race_end_notice(record: RaceRecord) -> EndNotice | None:
    """What the end of the race owes its targets, written with the end in race.json: every target, when `end`
    (or, for a pooled budget spent, `budget`) is chosen; None: nothing to tell."""
    found = _race_targets(record)
    if found is None:
        return None
    return owed_notice(race_end_event(record), len(found[0]), found[1])


def tell_race_end(journal: Journal, *, wait: wait_base | None = None) -> EndNotice | None:
    """Tell the race's end to every target race.json's `endNotice` still owes it (its one notification: its
    racers never send their `end`), recorded in the race's notifications.json, then in race.json what is still
    owed. Waits for the delivery (bounded). At least once: a sender killed before race.json says the end was
    delivered leaves it owed, and the next one (`resume --session S`, the user service) sends it again.
    SessionBusyError while another process tells it; a failure to deliver never raises: the race's outcome does
    not change."""
    with journal.notice_lock():
        record = journal.read_race()
        notice = record.end_notice
        if notice is None or not notice.owed:
            return notice
        found = _race_targets(record)
        record.end_notice = _tell(
            notice, found[0] if found is not None else [],
            lambda some: Sender(journal=journal, repo=Path(record.repo), targets=some, wait=wait),
            lambda: _race_message(notice.event, journal, record), f"race {record.session_id}", record.session_id,
        )  # fmt: skip
        journal.write_race(record)
        return record.end_notice


def _race_message(event: NotifyEvent, journal: Journal, record: RaceRecord) -> Message:
    """The race's status as `harness status --session S --json` prints it (its racers side by side), with the
    event and the verdict; the record's main facts when it cannot be made."""
    from runner.usecases.race_status import race_status  # it imports the race's use case, which imports this

    race = record.session_id
    try:
        st = race_status(Path(record.repo), race)
        data: dict[str, Any] = {"event": event.value, **st.model_dump(mode="json", by_alias=True),
                                "verdict": st.verdict}  # fmt: skip
        verdict, cost = st.verdict, st.cost_usd
    except Exception as exc:  # the status is a courtesy, as a session's report is
        why = exc.message if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
        log.warning("race %s: its status could not be made (%s): sending the record's facts", race, why)
        verdict = f"finished: {', '.join(record.winners)} won" if record.winners else "finished: no winner"
        cost = 0.0
        data = {"event": event.value, "kind": "solo-harness.race-report", "sessionId": race, "repo": record.repo,
                "state": record.state.value, "endReason": record.end_reason, "winners": list(record.winners),
                "racers": [r.session_id for r in record.racers], "verdict": verdict}  # fmt: skip
    title = f"harness: race {race} " + (f"won by {', '.join(record.winners)}" if record.winners else "ended, no winner")
    text = (f"{title} ({event.value}): {verdict.partition('  ')[2] or verdict}\n"
            f"{len(record.racers)} racers, cost ${cost:.2f}, ended: {record.end_reason}")  # fmt: skip
    env = {
        "HARNESS_EVENT": event.value, "HARNESS_SESSION": race, "HARNESS_RACE": race,
        "HARNESS_STATE": record.state.value, "HARNESS_STOP_REASON": record.end_reason or "",
        "HARNESS_VERDICT": verdict, "HARNESS_WINNERS": ",".join(record.winners),
        "HARNESS_COST_USD": f"{cost:.4f}", "HARNESS_REPO": record.repo, "HARNESS_JOURNAL_DIR": str(journal.dir),
    }  # fmt: skip
    return Message(event=event, about=f"race {race}", data=data, title=title, text=text, env=env,
                   race_end=record.end_reason, winners=list(record.winners))  # fmt: skip
