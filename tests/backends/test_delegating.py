"""A third engine, touching nothing of the harness but the registry: the minimal one of tests/backends/delegating.py
(every call handed to Docker) keeps the engines' contract (tests/backends/contract.py), and once registered it is
a `--backend` like the others: its option comes from its own table in the settings, a session runs on it, and the
session's journal names it so that `resume` and the others open it again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import runner.backends
from runner.backends import Engine, engine_config, open_engine
from runner.base.errors import UsageError
from runner.record.models import RunState
from tests.backends.contract import RealEngineContract, Subject, shell_subject
from tests.backends.delegating import DelegatingBackend, DelegatingConfig
from tests.backends.test_contract import docker_leave, docker_posture
from tests.helpers import GitRepo, containers

pytestmark = pytest.mark.docker


class TestDelegating(RealEngineContract):
    @pytest.fixture
    def subject(self) -> Subject:
        return shell_subject(DelegatingBackend(), docker_leave, docker_posture)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third engine in the registry, as its line in runner.backends.ENGINES would put it."""
    entry = Engine("tests.backends.delegating:DelegatingConfig", "tests.backends.delegating:DelegatingBackend")
    monkeypatch.setitem(runner.backends.ENGINES, "delegating", entry)


def _user_settings(text: str) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_registered_engine_is_a_backend_with_a_table_of_its_own(repo: GitRepo, registered: None) -> None:
    from runner.usecases.plan import plan_run, run_request
    from runner.usecases.sessions import session_engine, start_run

    _user_settings('[delegating]\nshift = "night"\n')
    options = {"backend": "delegating", "agent": "demo", "max_iterations": 3}
    request = run_request(session="third", objective="Record two steps", objective_file=None, repo=repo.path,
                          base="HEAD", options=options)  # fmt: skip
    assert request.backend == DelegatingConfig(shift="night")
    assert request.sources["delegating.shift"].startswith("user:")
    assert request.options["delegating"] == {"shift": "night"}
    engine = open_engine(request.backend)
    assert isinstance(engine, DelegatingBackend) and engine.config.shift == "night"
    plan = plan_run(engine, request)
    assert plan.backend.model_dump() == {"type": "delegating", "shift": "night"}
    assert plan.submission["labels"]["io.example.shift"] == "night"  # type: ignore[index]

    summary = start_run(engine, request)
    assert (summary.status, summary.iteration_count) == (RunState.COMPLETED, 2)
    assert repo.git("log", "--format=%s", "main..harness/third").splitlines() == ["demo: step 2", "demo: step 1"]
    # The journal names the engine with its configuration: what `resume`, `hud`, `discard` open again.
    again = open_engine(session_engine(repo.path, "third"))
    assert isinstance(again, DelegatingBackend) and again.config == DelegatingConfig(shift="night")
    assert not containers("io.example.shift=night")  # every container it ran is removed


def test_an_engines_table_is_checked_by_its_configuration(repo: GitRepo, registered: None) -> None:
    from runner.usecases.plan import run_request

    _user_settings('[delegating]\nshfit = "night"\n')
    with pytest.raises(UsageError, match=r"config.toml: unknown key 'delegating.shfit'"):
        run_request(session="t", objective="x", objective_file=None, repo=repo.path, base="HEAD",
                    options={"backend": "delegating"})  # fmt: skip
    with pytest.raises(UsageError, match=r"the delegating engine's configuration: shift"):
        engine_config({"type": "delegating", "shift": 3})
