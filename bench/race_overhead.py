"""Race overhead: a race of 4 no-op racers against the same 4 sessions started by hand.

The race is `harness race --n 4 --agent-cmd NOOP --check true --detach`, timed from its launch until race.json
says it finished (every racer ended, the winner declared). The baseline is what a user would type instead:
four `harness run --detach` one after the other, with the same agent, check and limits, on the same kind of
repository, timed from the first launch until every one of them ended. The agent reports done at once and the
check passes, so each session is one iteration: what is measured is the sessions' own cost (plan, copy,
container, check, harvest) and, for the race, what it adds (planning all racers first, the race's supervisor,
its start of each racer, its polling and its end). Race and baseline alternate, each in a fresh repository
and harness home; full: 3 pairs, quick: 1.

Goal (issue 19): the race's wall time <= 1.1x the four runs'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench._common import BenchError, Ratio, Result, bench_env, harness_argv, main, run, small_repo

NAME = "race-overhead"
RACERS = 4
NOOP = 'printf \'{"state":"done","summary":"noop"}\' > "$HARNESS_STATUS_FILE"'
COMMON = ("--objective", "benchmark", "--agent-cmd", NOOP, "--check", "true", "--max-iterations", "1")
DEADLINE_SECONDS = 600.0


def _wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not end in {DEADLINE_SECONDS:.0f} s")
        time.sleep(0.05)


def _ended(repo: Path, session: str) -> bool:
    from runner.base.errors import HarnessError
    from runner.record.journal import Journal
    from runner.record.models import RunState

    journal = Journal.for_repo(repo, session)
    try:
        summary = journal.read_summary()
    except HarnessError:
        return False  # not written yet
    return summary.status is not RunState.RUNNING and not journal.supervisor_alive()


def _check_completed(repo: Path, sessions: list[str]) -> None:
    from runner.record.journal import Journal
    from runner.record.models import RunState

    for session in sessions:
        summary = Journal.for_repo(repo, session).read_summary()  # validated by the model
        if summary.status is not RunState.COMPLETED:
            raise BenchError(f"{session} ended {summary.status.value} ({summary.stop_reason})")


def by_hand(tmp: Path) -> float:
    repo = small_repo(tmp / "by-hand")
    sessions = [f"m-{k}" for k in range(1, RACERS + 1)]
    start = time.monotonic()
    for session in sessions:
        run(harness_argv("run", "--session", session, *COMMON, "--detach", "--json"), cwd=repo, timeout=300)
    _wait(lambda: all(_ended(repo, s) for s in sessions), "the four runs")
    took = time.monotonic() - start
    _check_completed(repo, sessions)
    return took


def race(tmp: Path) -> float:
    from runner.record.journal import Journal
    from runner.record.models import RaceState

    repo = small_repo(tmp / "race")
    journal = Journal.for_repo(repo, "m")
    start = time.monotonic()
    run(harness_argv("race", "--session", "m", "--n", str(RACERS), *COMMON, "--judge", "all", "--detach", "--json"),
        cwd=repo, timeout=300)  # fmt: skip
    _wait(lambda: journal.read_race().state is RaceState.FINISHED and not journal.supervisor_alive(), "the race")
    took = time.monotonic() - start
    record = journal.read_race()
    racers = [r.session_id for r in record.racers]
    _check_completed(repo, racers)
    if sorted(record.winners) != racers:
        raise BenchError(f"the race's winners are {record.winners}, not every racer")
    return took


def measure(quick: bool) -> Result:
    pairs = 1 if quick else 3
    raced, hand = [], []
    for n in range(pairs):
        with bench_env(f"race-{n}") as env:
            # Alternate which goes first, so that a drift in the machine's load falls on both.
            if n % 2:
                raced.append(race(env.tmp))
                hand.append(by_hand(env.tmp))
            else:
                hand.append(by_hand(env.tmp))
                raced.append(race(env.tmp))
    result = Result(NAME, "Race overhead", quick)
    a = result.add(f"race of {RACERS} no-op racers: launch until finished", raced)
    b = result.add(f"{RACERS} `harness run --detach` by hand: first launch until all ended", hand)
    result.ratios.append(Ratio(f"race / {RACERS} runs by hand", a.median / b.median, 1.1, why=_WHY))
    result.facts.append(
        f"{RACERS} sessions each way, one iteration whose agent reports done at once and `--check true` passes; "
        f"{pairs} pair{'s' if pairs > 1 else ''}, alternating which goes first, each in a fresh repository and "
        "harness home; every session ended completed, and the race declared every racer a winner (--judge all); "
        "the racers' copies come from the repository's shared seed, the runs' by hand are each a full clone (a "
        "small repository here: the seed's gain is measured by the setup benchmark, not this one)"
    )
    if a.median < b.median:
        result.notes.append(
            "The race comes out faster than the runs by hand: one `harness race` process plans every racer, where "
            "each `harness run --detach` is a process of its own (its start-up, its engine check, its plan) that "
            "returns only once its supervisor holds the session's lock, so the last run starts after the others' "
            "start-ups. The race's own supervisor, its start of the racers and its polling cost less than that."
        )
    return result


_WHY = (
    "the race plans every racer before it creates any, then its supervisor starts each racer's supervisor and "
    "waits until it holds its lock, one after the other; the runs by hand start theirs the same way, one "
    "`harness run --detach` after the other"
)


if __name__ == "__main__":
    main(measure, __doc__)
