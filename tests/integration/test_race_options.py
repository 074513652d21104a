"""`harness race` takes the options of `harness run` and gives them to every racer (real engine, real git):
a project's environment made by `--setup`, the network, the agent's options; `--dry-run` plans every racer
and creates nothing; what cannot make a race is refused in one line before anything exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.base.paths import run_dir
from tests.helpers import GitRepo, containers, harness
from tests.integration.test_race import (
    DONE,
    _end_what_the_race_left,  # noqa: F401  # autouse: it ends what a failed race left
    summary,
)

pytestmark = pytest.mark.docker

# The check reads what the setup leaves in each copy outside git (as a virtualenv would be): no racer's agent
# writes it, so without --setup no racer can pass.
SETUP = "echo ready > .env-ready"
CHECK = "grep -q ready .env-ready"


def race(session: str, *extra: str, n: int = 2) -> list[str]:
    return ["race", "--session", session, "--objective", "x", "--n", str(n), "--agent-cmd", DONE,
            "--max-iterations", "1", *extra]  # fmt: skip


def nothing_made(repo: GitRepo, race_id: str, n: int = 2) -> None:
    for session in (race_id, *(f"{race_id}-{k}" for k in range(1, n + 1))):
        assert not repo.journal(session).exists(), session
        assert not run_dir(repo.path, session).exists(), session
        assert containers(f"io.solo-harness.session={session}") == [], session
    assert repo.git("for-each-ref", f"refs/heads/harness/{race_id}-*") == ""


def test_setup_makes_the_environment_every_racers_check_needs(repo: GitRepo) -> None:
    args = ["--check", CHECK, "--judge", "all", "--json"]
    control = harness(*race("bare", *args), cwd=repo.path)  # the control: no setup, no racer can pass
    assert control.code == 21, control.stderr
    assert control.json()["winners"] == []
    assert [row["checkPassed"] for row in control.json()["racers"]] == [False, False]

    r = harness(*race("env", *args, "--setup", SETUP), cwd=repo.path)
    assert r.code == 0, r.stderr
    assert sorted(r.json()["winners"]) == ["env-1", "env-2"]
    for k in (1, 2):
        s = summary(repo, f"env-{k}")
        assert s.setup_command == SETUP and s.setup_source == "flag"
        assert ".env-ready" not in repo.git("ls-tree", "--name-only", f"harness/env-{k}")  # never committed


def test_the_session_options_reach_every_racers_summary(repo: GitRepo) -> None:
    # The user's settings ask for an allowlist and name no host: --network none on the command line wins.
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('network = "allowlist"\n')
    control = harness(*race("cfg", "--check", "true"), cwd=repo.path)
    assert control.code == 2 and "--network allowlist needs at least one --allow-host" in control.stderr
    nothing_made(repo, "cfg")

    given = ["--network", "none", "--model", "m-1", "--max-turns", "3", "--no-keep-awake", "--runtime", "runc"]
    r = harness(*race("opts", "--check", "true", *given, "--json"), cwd=repo.path)
    assert r.code == 0, r.stderr
    for k in (1, 2):
        s = summary(repo, f"opts-{k}")
        assert (s.network, s.allow_hosts, s.runtime) == ("none", [], "runc")
        assert (s.agent.model, s.agent.max_turns, s.keep_awake.enabled) == ("m-1", 3, False)


def test_dry_run_plans_every_racer_and_creates_nothing(repo: GitRepo) -> None:
    args = race("dry", "--check", CHECK, "--setup", SETUP, "--network", "none", "--model", "m-1", "--dry-run")
    r = harness(*args, "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["sessionId"] == "dry" and plan["judge"] == "first"
    racers = plan["racers"]
    assert [p["session"] for p in racers] == ["dry-1", "dry-2"]
    assert [(p["setup"]["command"], p["network"], p["agent"]["model"]) for p in racers] == [(SETUP, "none", "m-1")] * 2
    assert len({p["seed"] for p in racers}) == 1 and racers[0]["seed"] is not None
    assert not Path(racers[0]["seed"]).exists()  # not even the seed: it is made with the first copy
    nothing_made(repo, "dry")

    text = harness(*args, cwd=repo.path)
    assert text.code == 0, text.stderr
    assert "racer dry-1" in text.stdout and "racer dry-2" in text.stdout and SETUP in text.stdout
    assert "dry run: nothing was created" in text.stdout
    nothing_made(repo, "dry")


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--models", "a,b", "--model", "c"], "--models gives each racer its model: it cannot go with --model"),
        (["--setup-allow-host", "pypi"], "--setup-allow-host needs --setup CMD"),
        (["--allow-host", "example.org"], "--allow-host needs --network allowlist"),
        (["--network", "host"], "--network: 'host' is not one of none, allowlist"),
        (["--runtime", "kata"], "--runtime: 'kata' is not one of"),
        (["--auth", "password"], "--auth"),
        (["--max-turns", "0"], "--max-turns"),
        (["--backend", "podman"], "--backend: 'podman' is not one of docker, kubernetes"),
    ],
)
def test_what_a_racer_cannot_take_is_refused_in_one_line_before_anything_exists(
    repo: GitRepo, extra: list[str], says: str, dry_run: bool
) -> None:
    r = harness(*race("bad", "--check", "true", *extra, *(["--dry-run"] if dry_run else [])), cwd=repo.path)
    assert r.code == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    nothing_made(repo, "bad")


def test_dry_run_shows_where_the_race_notifies_never_the_targets_secret(repo: GitRepo) -> None:
    secret = "T0-SECRET-PATH-5e1f"
    args = race("dn", "--check", "true", "--notify", f"https://hooks.example.invalid/{secret}", "--notify-on",
                "end,blocked", "--dry-run")  # fmt: skip
    r = harness(*args, "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["notify"] == {"targets": ["https://hooks.example.invalid/…"], "events": ["end", "blocked"]}
    # The race tells its own end; each racer only the other events chosen, to the same (redacted) target.
    assert [p["notify"] for p in plan["racers"]] == [{"targets": ["https://hooks.example.invalid/…"],
                                                      "events": ["blocked"]}] * 2  # fmt: skip
    text = harness(*args, cwd=repo.path)
    assert text.code == 0, text.stderr
    for out in (r, text):
        assert secret not in out.stdout + out.stderr
    nothing_made(repo, "dn")
