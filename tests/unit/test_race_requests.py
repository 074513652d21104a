"""How `harness race` turns its options into one `run` request per racer (no engine: nothing is planned here)."""

from __future__ import annotations

import pytest

from runner.base.errors import UsageError
from runner.usecases.options import LimitOptions
from runner.usecases.plan import RunRequest
from runner.usecases.race import RaceRequest, racer_requests

BASE = RunRequest(session="night", objective="x", check="pytest -q", agent_cmd="run-it", model="base-model")


def test_n_repeats_one_agent_and_models_go_in_turn_each_racer_from_the_seed() -> None:
    found = racer_requests(RaceRequest(base=BASE, n=3, models=("a", "b", "c"), agent_given=True))
    assert [(r.session, r.agent_cmd, r.model, r.seed) for r in found] == [
        ("night-1", "run-it", "a", True), ("night-2", "run-it", "b", True), ("night-3", "run-it", "c", True)
    ]  # fmt: skip
    assert all(r.check == "pytest -q" for r in found)


def test_agents_give_each_racer_its_agent_and_no_command() -> None:
    found = racer_requests(RaceRequest(base=BASE, agents=("claude-code", "codex")))
    assert [(r.session, r.agent, r.agent_cmd, r.model) for r in found] == [
        ("night-1", "claude-code", None, "base-model"), ("night-2", "codex", None, "base-model")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (RaceRequest(base=BASE), "exactly one of --agents"),
        (RaceRequest(base=BASE, n=2, agents=("a", "b")), "exactly one of --agents"),
        (RaceRequest(base=BASE, agents=("a", "b"), agent_given=True), "cannot go with --agent"),
        (RaceRequest(base=BASE, n=17), "2 to 16 racers"),
        (RaceRequest(base=BASE, n=2, models=("a",)), "one model per racer"),
        (RaceRequest(base=BASE, n=2, models=("a", "b"), model_given=True), "cannot go with --model"),
        (RaceRequest(base=BASE, n=2, judge="all", first=True), "cannot go with --judge all"),
        (RaceRequest(base=BASE, n=2, budget="pooled"), "needs --max-cost"),
        (RaceRequest(base=RunRequest(session="night", objective="x"), n=2), "needs --check"),
        (RaceRequest(base=RunRequest(session="-bad", check="true"), n=2), "invalid session name"),
        (RaceRequest(base=BASE, n=2, judge="best"), "--judge"),  # type: ignore[arg-type]
    ],
)
def test_what_does_not_make_a_race_is_refused_in_one_line(request_: RaceRequest, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        racer_requests(request_)


def test_a_pooled_budget_caps_each_racer_at_the_pool_too() -> None:
    pooled = RaceRequest(base=RunRequest(session="p", check="true", limits=LimitOptions(max_cost=2.0)), n=2,
                         budget="pooled")  # fmt: skip
    assert [r.limits.max_cost for r in racer_requests(pooled)] == [2.0, 2.0]


@pytest.mark.parametrize(
    ("events", "racers_get"),
    [
        (("end",), ((), ("end",))),  # only the race's end: the racers send nothing
        (("end,blocked", "budget"), (("https://h.example/hook",), ("blocked", "budget"))),
        (("all",), (("https://h.example/hook",), ("blocked", "usage-limit", "budget", "failures"))),
    ],
)
def test_the_racers_send_every_event_chosen_but_the_end_which_the_race_tells_once(
    events: tuple[str, ...], racers_get: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    base = RunRequest(session="n", check="true", notify=("https://h.example/hook",), notify_on=events)
    assert {(r.notify, r.notify_on) for r in racer_requests(RaceRequest(base=base, n=2))} == {racers_get}


def test_a_race_with_a_target_that_is_not_one_is_refused_naming_no_secret() -> None:
    base = RunRequest(session="n", check="true", notify=("hooks.example/T0SECRET",))
    with pytest.raises(UsageError, match="--notify") as caught:
        racer_requests(RaceRequest(base=base, n=2))
    assert "T0SECRET" not in caught.value.message
