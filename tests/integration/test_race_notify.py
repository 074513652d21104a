"""Notifications of a race (`race --notify`) on the real Docker engine and real git, to receivers on loopback: the
race tells its end once, naming its winner; its racers tell only the other events chosen, each naming the race; a
receiver that is down changes nothing; the targets' secrets are in no journal file and no log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import GitRepo, harness
from tests.integration.test_race import race_args
from tests.notify_receiver import Receiver

pytestmark = pytest.mark.docker

# Racer 1 is blocked, racer 2 writes what the check wants, racer 3 claims to be done without it.
AGENT = """case "$HARNESS_SESSION" in
*-1) printf '{"state": "blocked", "summary": "needs a human"}' > "$HARNESS_STATUS_FILE";;
*-2) echo ok > ok.txt; printf '{"state": "done", "summary": "wrote it"}' > "$HARNESS_STATUS_FILE";;
*) echo nope > no.txt; printf '{"state": "done", "summary": "did not"}' > "$HARNESS_STATUS_FILE";;
esac"""
SECRETS = ("RACE-PATH-s3cret", "RACE-QUERY-t0ken", "DOWN-topic-s3cret")


def notifications(repo: GitRepo, session: str) -> list[dict[str, Any]]:
    path = repo.journal(session) / "notifications.json"
    found: list[dict[str, Any]] = json.loads(path.read_text())["notifications"] if path.exists() else []
    return found


def test_a_race_tells_its_end_once_with_its_winner_and_its_racers_only_the_other_events(repo: GitRepo) -> None:
    with Receiver() as gone:
        down = f"{gone.url}/DOWN-topic-s3cret"  # nothing listens there once it is closed
    with Receiver() as up:
        target = f"{up.url}/hooks/RACE-PATH-s3cret?token=RACE-QUERY-t0ken"
        assert all(secret in target + down for secret in SECRETS)  # control: each secret is in what is given
        r = harness(*race_args("rn", AGENT, "--notify", target, "--notify", down, "--notify-on", "end,blocked"),
                    "--json", cwd=repo.path)  # fmt: skip
    # The race's outcome, with one receiver down: as without notifications.
    assert r.code == 0, r.stderr
    st = r.json()
    assert (st["state"], st["winners"], st["endReason"]) == ("finished", ["rn-2"], "all-ended")
    statuses = {row["sessionId"]: row["status"] for row in st["racers"]}
    assert statuses == {"rn-1": "blocked", "rn-2": "completed", "rn-3": "stopped"}

    posts = [json.loads(p.body) for p in up.received]
    assert all(p.path == "/hooks/RACE-PATH-s3cret?token=RACE-QUERY-t0ken" for p in up.received)  # as given
    # Exactly one end, the race's, naming the winner; racer 1's `blocked`, naming the race; nothing of racers 2
    # and 3, whose ends are the race's to tell.
    ends = [p for p in posts if p["event"] == "end"]
    assert len(ends) == 1 and len(posts) == 2, [(p["event"], p["sessionId"]) for p in posts]
    (end,) = ends
    assert (end["kind"], end["sessionId"], end["state"], end["winners"]) == (
        "solo-harness.race-report", "rn", "finished", ["rn-2"])  # fmt: skip
    assert "rn-2 won" in end["verdict"] and [row["sessionId"] for row in end["racers"]] == ["rn-1", "rn-2", "rn-3"]
    (blocked,) = [p for p in posts if p["event"] == "blocked"]
    assert (blocked["race"], blocked["sessionId"], blocked["status"]) == ("rn", "rn-1", "blocked")
    assert [h["x-harness-event"] for h in (p.headers for p in up.received)].count("end") == 1

    # Recorded as a session's are: the race's end in the race's journal, each racer's own in its journal.
    shown_up, shown_down = f"{up.url}/…", f"{gone.url}/…"
    race = {n["target"]: n for n in notifications(repo, "rn")}
    assert set(race) == {shown_up, shown_down}
    assert all((n["event"], n["raceEnd"], n["winners"]) == ("end", "all-ended", ["rn-2"]) for n in race.values())
    assert race[shown_up]["delivered"] and race[shown_up]["attempts"] == 1
    assert not race[shown_down]["delivered"] and race[shown_down]["attempts"] == 3
    assert "refused" in race[shown_down]["error"].lower()
    racer = {n["target"]: n for n in notifications(repo, "rn-1")}
    assert {(t, n["event"], n["delivered"]) for t, n in racer.items()} == {
        (shown_up, "blocked", True), (shown_down, "blocked", False)}  # fmt: skip
    assert notifications(repo, "rn-2") == [] and notifications(repo, "rn-3") == []
    record = json.loads((repo.journal("rn") / "race.json").read_text())
    assert record["notify"] == {"targets": [shown_up, shown_down], "events": ["end", "blocked"]}

    # Every file of every journal (the racers' supervisor logs included), what the race printed and `status`.
    files = [p for p in (repo.path / "memory").rglob("*") if p.is_file()]
    assert {"notifications.json", "supervisor.log", "race.json"} <= {p.name for p in files}
    written = "\n".join(p.read_text(errors="replace") for p in files)
    assert shown_up in written  # control: the targets are in these files, shown by kind and host
    status = harness("status", "--session", "rn", "--json", cwd=repo.path)
    for secret in SECRETS:
        assert not any(secret in text for text in (written, r.stdout, r.stderr, status.stdout, status.stderr)), secret
