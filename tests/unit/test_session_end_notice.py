"""A session's end is owed to its targets until each has taken it (run-summary.json's `endNotice`): the loop writes
what the end owes in the write that records the end, a second Ctrl-C owes nothing, the notifier leaves an owed end
to `tell_session_end`, which sends only to the targets still owed and records what is left, one process at a time;
and the user service tells only ends still `pending` (recorded journals, receivers on loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from runner.base.errors import SessionBusyError
from runner.record.journal import Journal
from runner.record.models import EndNotice, NotifyEvent, RunState, RunSummary, StopReason
from runner.record.notify import parse_target, save_targets
from runner.usecases.notify import SessionNotifier, owed_notice, tell_session_end
from tests.helpers import GitRepo
from tests.notify_receiver import Receiver
from tests.unit.test_notify import _summary
from tests.unit.test_supervisor import Harness, report


class Owing:
    """A notifier that owes every end to two targets, and records what the loop hands it and what the journal then
    says (the end and its notice in one write: both there before the send)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: list[tuple[NotifyEvent, EndNotice | None, Any]] = []

    def owe(self, event: NotifyEvent, summary: RunSummary) -> EndNotice | None:
        return owed_notice(event, 2, [NotifyEvent.END])

    def send(self, event: NotifyEvent, summary: RunSummary) -> None:
        kept = self.journal.read_summary()
        self.sent.append((event, summary.end_notice, (kept.status, kept.end_notice)))


def test_the_loop_writes_what_the_end_owes_with_the_end_and_a_new_run_owes_afresh(
    tmp_path: Path, repo: GitRepo
) -> None:
    h = Harness(tmp_path, repo, report("blocked"), max_iterations=5)
    h.summary.end_notice = EndNotice(event=NotifyEvent.END, state="delivered", sends=1)  # the last end's, told
    owing = Owing(h.journal)
    from runner.loop.supervisor import Supervisor

    Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, notifier=owing).run(h.summary)
    pending = EndNotice(event=NotifyEvent.BLOCKED, state="pending", owed=[0, 1])
    assert owing.sent == [(NotifyEvent.BLOCKED, pending, (RunState.BLOCKED, pending))]
    assert h.journal.read_summary().end_notice == pending


def test_a_second_ctrl_c_owes_nothing(tmp_path: Path, repo: GitRepo) -> None:
    def interrupted(spec: object) -> object:
        raise KeyboardInterrupt

    h = Harness(tmp_path, repo, interrupted, max_iterations=5)
    owing = Owing(h.journal)
    from runner.loop.supervisor import Supervisor

    with pytest.raises(KeyboardInterrupt):
        Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, notifier=owing).run(
            h.summary
        )
    kept = h.journal.read_summary()
    assert (kept.status, kept.stop_reason, kept.end_notice, owing.sent) == (
        RunState.INTERRUPTED, StopReason.INTERRUPTED, None, [])  # fmt: skip


def _session(tmp_path: Path, targets: list[str], status: RunState = RunState.COMPLETED) -> Journal:
    journal = Journal(tmp_path / "journal", "s")
    journal.create("o")
    save_targets(tmp_path, "s", targets, [NotifyEvent.END], journal_dir=journal.dir)
    summary = _summary(status, StopReason.AGENT_DONE).model_copy(update={"repo": str(tmp_path)})
    summary.end_notice = owed_notice(NotifyEvent.END, len(targets), [NotifyEvent.END])
    journal.write_summary(summary)
    return journal


def test_the_notifier_leaves_an_owed_end_to_the_teller_and_sends_the_others(tmp_path: Path) -> None:
    with Receiver() as up:
        notifier = SessionNotifier(journal=_session(tmp_path, [up.url]), repo=tmp_path, targets=[parse_target(up.url)],
                                   events=[NotifyEvent.END], wait=wait_none())  # fmt: skip
        owed = notifier.owe(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))
        assert owed == EndNotice(event=NotifyEvent.END, state="pending", owed=[0])
        ended = _summary(RunState.COMPLETED, StopReason.AGENT_DONE).model_copy(update={"end_notice": owed})
        notifier.send(NotifyEvent.END, ended)
        notifier.close(30)
        assert up.count() == 0  # the teller's, not the loop's
        notifier.send(NotifyEvent.END, _summary(RunState.COMPLETED, StopReason.AGENT_DONE))  # control: owes none
        notifier.close(30)
        assert up.count() == 1


def test_each_telling_sends_only_to_the_targets_still_owed_and_records_what_is_left(tmp_path: Path) -> None:
    with Receiver() as up, Receiver(404, 200) as refusing:  # the second refuses once, then takes it
        journal = _session(tmp_path, [f"{up.url}/a", f"{refusing.url}/b"])
        first = tell_session_end(journal, wait=wait_none())
        assert first is not None and (first.state, first.owed, first.sends) == ("failed", [1], 1)
        assert journal.read_summary().end_notice == first
        second = tell_session_end(journal, wait=wait_none())  # `resume`: the one still owed only
        assert second is not None and (second.state, second.owed, second.sends) == ("delivered", [], 2)
        third = tell_session_end(journal, wait=wait_none())  # nothing owed: nothing sent
        assert third == second and (up.count(), refusing.count()) == (1, 2)
        sent = json.loads(refusing.received[-1].body)
        assert (sent["event"], sent["sessionId"], sent["status"]) == ("end", "s", "completed")
    assert sorted(n.delivered for n in journal.notifications().notifications) == [False, True, True]


def test_one_process_tells_the_end_at_a_time(tmp_path: Path) -> None:
    with Receiver() as up:
        journal = _session(tmp_path, [up.url])
        with journal.notice_lock(), pytest.raises(SessionBusyError, match="being told by another harness process"):
            tell_session_end(journal, wait=wait_none())
        assert up.count() == 0 and journal.read_summary().end_notice == owed_notice(NotifyEvent.END, 1,
                                                                                       [NotifyEvent.END])  # fmt: skip
        told = tell_session_end(journal, wait=wait_none())  # control: once the lock is free, it is told
        assert told is not None and told.state == "delivered" and up.count() == 1


def test_the_service_tells_only_an_end_still_pending(tmp_path: Path, repo: GitRepo) -> None:
    from runner.usecases.autoresume import _tell_owed
    from tests.unit.test_readers import record_session

    top = repo.path.resolve()
    with Receiver() as up:
        for session, state in (("p", "pending"), ("f", "failed")):
            journal = record_session(repo, session)
            save_targets(top, session, [up.url], [NotifyEvent.END], journal_dir=journal.dir)
            summary = journal.read_summary()
            summary.end_notice = EndNotice(event=NotifyEvent.END, state=state, owed=[0])  # type: ignore[arg-type]
            journal.write_summary(summary)
            told = _tell_owed(str(top), journal, journal.read_summary(), False, set())
            if state == "pending":
                assert [(t.session_id, t.action) for t in told] == [("p", "told")] and up.count() == 1
            else:  # a target that refused it is left to `resume`: the service would try it at every login
                assert told == [] and up.count() == 1
        again = _tell_owed(str(top), Journal.for_repo(top, "p"), Journal.for_repo(top, "p").read_summary(), False,
                           set())  # fmt: skip
        assert again == [] and up.count() == 1
