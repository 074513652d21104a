"""How a race is planned (plan_race): every racer as `run` plans a session, nothing created; the copies share
the repository's seed only on an engine whose mounts are the host's directories, and on Kubernetes each
racer's copy is a full clone of its own (planned against the real Kubernetes engine, its cluster never asked:
only its version check is answered here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.base import EngineInfo, HostMounts
from runner.backends.fake import FakeBackend
from runner.backends.kubernetes.config import KubernetesConfig
from runner.base.errors import UsageError
from runner.base.paths import run_dir, seed_dir
from runner.usecases.plan import RunRequest
from runner.usecases.race import RaceRequest, plan_race
from tests.helpers import GitRepo


class _BindingFake(FakeBackend, HostMounts):
    """The fake engine, said to mount the host's directories themselves (as Docker does)."""


def race(repo: GitRepo, **kw: object) -> RaceRequest:
    base = RunRequest(session="night", objective="x", repo=repo.path, agent_cmd="true", check="true", **kw)  # type: ignore[arg-type]
    return RaceRequest(base=base, n=3, agent_given=True)


def nothing_made(repo: GitRepo) -> None:
    for session in ("night", "night-1", "night-2", "night-3"):
        assert not repo.journal(session).exists() and not run_dir(repo.path, session).exists()
    assert not repo.git("for-each-ref", "refs/heads/harness/")
    assert not seed_dir(repo.path).exists()


def test_every_racer_is_planned_from_the_shared_seed_and_nothing_is_made(repo: GitRepo) -> None:
    planned = plan_race(_BindingFake(), race(repo, setup="make deps", network="none"))
    assert [p.session for p in planned.racers] == ["night-1", "night-2", "night-3"]
    assert {p.seed for p in planned.racers} == {str(seed_dir(repo.path))}
    assert len({p.run_dir for p in planned.racers}) == 3
    assert all(p.setup is not None and p.setup.command == "make deps" for p in planned.racers)
    nothing_made(repo)


def test_on_an_engine_that_copies_its_mounts_each_racer_is_a_full_clone(repo: GitRepo) -> None:
    planned = plan_race(FakeBackend(), race(repo))
    assert [p.seed for p in planned.racers] == [None, None, None]
    nothing_made(repo)


@pytest.fixture
def kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubernetesConfig:
    """A kubeconfig naming a cluster nobody listens for: planning reads it and never calls the cluster."""
    from runner.backends.kubernetes.engine import KubernetesBackend

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "clusters: [{name: lab, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: lab, context: {cluster: lab, user: u}}]\n"
    )
    info = EngineInfo(name="kubernetes", version="v1.30.0", runtimes=("runc",))
    monkeypatch.setattr(KubernetesBackend, "check", lambda self: info)
    return KubernetesConfig(kubeconfig=str(kubeconfig), namespace="agents")


def test_a_race_on_kubernetes_plans_a_full_clone_and_a_job_per_racer(
    repo: GitRepo, kubernetes: KubernetesConfig
) -> None:
    from runner.backends import open_engine

    planned = plan_race(open_engine(kubernetes), race(repo, backend=kubernetes))
    assert [p.seed for p in planned.racers] == [None, None, None]
    assert [(p.submission["kind"], p.submission["metadata"]["namespace"]) for p in planned.racers] == [  # type: ignore[index]
        ("Job", "agents")
    ] * 3
    assert {p.backend.model_dump()["type"] for p in planned.racers} == {"kubernetes"}
    nothing_made(repo)
    with pytest.raises(UsageError, match=r"^--setup needs --backend docker"):  # as `run` refuses it there
        plan_race(open_engine(kubernetes), race(repo, backend=kubernetes, setup="make deps"))
    nothing_made(repo)
