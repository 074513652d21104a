"""A race's end is owed to its targets until each has taken it (race.json's `endNotice`): what the end owes, that
each telling sends only to the targets still owed and records what is left, and that one process tells it at a time.
Receivers on loopback; the race's status cannot be made here, so the record's facts are sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tenacity import wait_none

from runner.base.errors import SessionBusyError
from runner.record.journal import Journal
from runner.record.models import NotifyEvent, Racer, RaceRecord, RaceState
from runner.record.notify import save_targets
from runner.usecases.notify import race_end_notice, tell_race_end
from tests.helpers import GitRepo, harness
from tests.notify_receiver import Receiver


def _race(tmp_path: Path, targets: list[str], events: list[NotifyEvent], end: str = "all-ended") -> Journal:
    journal = Journal(tmp_path / "journal", "r")
    journal.create("o")
    if targets:
        save_targets(tmp_path, "r", targets, events, journal_dir=journal.dir)
    record = RaceRecord(session_id="r", objective="o", repo=str(tmp_path), check_command="true",
                        racers=[Racer(session_id="r-1", agent="demo"), Racer(session_id="r-2", agent="demo")],
                        state=RaceState.FINISHED, end_reason=end, winners=["r-2"])  # type: ignore[arg-type]  # fmt: skip
    record.end_notice = race_end_notice(record)
    journal.write_race(record)
    return journal


def test_the_end_owes_every_target_the_event_chosen_and_nothing_without_one(tmp_path: Path) -> None:
    end, budget, blocked = NotifyEvent.END, NotifyEvent.BUDGET, NotifyEvent.BLOCKED
    cases = [  # targets, events, end reason -> (event, owed), or None: nothing to tell
        (["cmd:true", "cmd:false"], [end], "all-ended", (end, [0, 1])),
        (["cmd:true"], [end], "max-cost", (budget, [0])),
        (["cmd:true"], [budget], "max-cost", (budget, [0])),
        (["cmd:true"], [budget], "won-first", None),
        (["cmd:true"], [blocked], "stopped", None),
        ([], [end], "all-ended", None),
    ]
    for i, (targets, events, reason, owed) in enumerate(cases):
        notice = _race(tmp_path / str(i), targets, events, reason).read_race().end_notice
        found = (notice.event, notice.owed, notice.state, notice.sends) if notice else None
        assert found == ((*owed, "pending", 0) if owed else None), (i, found)


def test_each_telling_sends_only_to_the_targets_still_owed_and_records_what_is_left(tmp_path: Path) -> None:
    with Receiver() as up, Receiver(404, 200) as refusing:  # the second refuses once, then takes it
        journal = _race(tmp_path, [f"{up.url}/a", f"{refusing.url}/b"], [NotifyEvent.END])
        first = tell_race_end(journal, wait=wait_none())
        assert first is not None and (first.state, first.owed, first.sends) == ("failed", [1], 1)
        assert (up.count(), refusing.count()) == (1, 1)
        second = tell_race_end(journal, wait=wait_none())  # `resume --session r`: the one still owed only
        assert second is not None and (second.state, second.owed, second.sends) == ("delivered", [], 2)
        assert (up.count(), refusing.count()) == (1, 2)
        third = tell_race_end(journal, wait=wait_none())  # nothing owed: nothing sent
        assert third == second and (up.count(), refusing.count()) == (1, 2)
        sent = json.loads(refusing.received[-1].body)
        assert (sent["event"], sent["sessionId"], sent["winners"], sent["endReason"]) == ("end", "r", ["r-2"],
                                                                                          "all-ended")  # fmt: skip
    told = [(n.target.endswith(":" + up.url.rsplit(":", 1)[1] + "/…"), n.delivered) for n in
            journal.notifications().notifications]  # fmt: skip
    assert sorted(told) == [(False, False), (False, True), (True, True)]  # the up one once, the other twice
    assert journal.read_race().end_notice == second


def test_one_process_tells_the_end_at_a_time(tmp_path: Path) -> None:
    with Receiver() as up:
        journal = _race(tmp_path, [up.url], [NotifyEvent.END])
        with journal.notice_lock(), pytest.raises(SessionBusyError, match="being told by another harness process"):
            tell_race_end(journal, wait=wait_none())
        assert up.count() == 0
        notice = journal.read_race().end_notice
        assert notice is not None and (notice.state, notice.owed) == ("pending", [0])
        told = tell_race_end(journal, wait=wait_none())  # control: once the lock is free, it is told
        assert told is not None and told.state == "delivered" and up.count() == 1


def test_resume_of_a_finished_race_tells_only_the_end_it_owes_detached_or_not(repo: GitRepo) -> None:
    from tests.unit.test_readers import record_race, record_session

    top = repo.path.resolve()
    with Receiver() as up:
        for told, (race, detach) in enumerate((("ra", ()), ("rd", ("--detach",))), start=1):
            summaries = [record_session(repo, f"{race}-{k}").summary_path for k in (1, 2)]
            before = [path.read_text() for path in summaries]
            journal = record_race(repo, race, 2, [f"{race}-2"])
            save_targets(top, race, [up.url], [NotifyEvent.END], journal_dir=journal.dir)
            record = journal.read_race()
            record.end_notice = race_end_notice(record)  # as the supervisor writes it with the end, then died
            journal.write_race(record)
            r = harness("resume", "--session", race, *detach, "--json", cwd=repo.path)
            assert r.code == 0, r.stderr  # the race's status: finished, won
            assert (r.json()["state"], r.json()["winners"]) == ("finished", [f"{race}-2"])
            assert up.count() == told and json.loads(up.received[-1].body)["sessionId"] == race
            after = journal.read_race()
            assert after.end_notice is not None and (after.end_notice.state, after.end_notice.sends) == ("delivered", 1)
            assert (after.state, after.supervisor, after.finished_at) == (record.state, None, record.finished_at)
            assert [path.read_text() for path in summaries] == before  # no racer touched
            again = harness("resume", "--session", race, *detach, cwd=repo.path)
            assert again.code == 11 and f"race {race!r} is finished" in again.stderr, again.stderr
            assert up.count() == told
