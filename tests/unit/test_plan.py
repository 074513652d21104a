"""plan_run's checks that need no engine: driven with the fake backend and a real git repository."""

import pytest

from runner.backends.base import HostMounts
from runner.backends.fake import FakeBackend
from runner.base.errors import RuntimeUnavailableError, UsageError
from runner.base.layout import SEED_DIR
from runner.base.paths import seed_dir
from runner.usecases.plan import RunRequest, plan_run
from tests.helpers import GitRepo


def request(repo: GitRepo, **kw: object) -> RunRequest:
    return RunRequest(session="s", objective="x", repo=repo.path, agent="demo", **kw)  # type: ignore[arg-type]


def test_an_unregistered_runtime_is_refused_with_its_own_error(repo: GitRepo) -> None:
    with pytest.raises(RuntimeUnavailableError, match="no runtime 'runsc'"):
        plan_run(FakeBackend(), request(repo, runtime="runsc"))


def test_an_unknown_runtime_is_a_usage_error(repo: GitRepo) -> None:
    with pytest.raises(UsageError, match="--runtime"):
        plan_run(FakeBackend(), request(repo, runtime="kata"))


def test_a_request_made_without_the_settings_meets_their_rules(repo: GitRepo) -> None:
    """A RunRequest built directly (bench, tests) is refused as the settings refuse the same values."""
    with pytest.raises(UsageError, match=r"^--network: 'host' is not one of none, allowlist \(host networking"):
        plan_run(FakeBackend(), request(repo, network="host"))
    with pytest.raises(UsageError, match=r"^--max-iterations must be at least 1$"):
        plan_run(FakeBackend(), request(repo, max_iterations=0))
    with pytest.raises(UsageError, match=r"^--setup: the command is empty$"):
        plan_run(FakeBackend(), request(repo, setup=" "))
    assert plan_run(FakeBackend(), request(repo, max_iterations=1)).limits.max_iterations == 1  # control


def test_env_values_must_exist_and_be_redactable(repo: GitRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="not set"):
        plan_run(FakeBackend(), request(repo, env_names=("NOT_SET_ANYWHERE_123",)))
    monkeypatch.setenv("SHORT_ONE", "ab")
    with pytest.raises(UsageError, match="too short"):
        plan_run(FakeBackend(), request(repo, env_names=("SHORT_ONE",)))
    with pytest.raises(UsageError, match="not a variable name"):
        plan_run(FakeBackend(), request(repo, env_names=("HARNESS_SESSION",)))
    monkeypatch.setenv("API_TOKEN", "tok-1234567890")
    plan = plan_run(FakeBackend(), request(repo, env_names=("API_TOKEN",)))
    assert plan.env_names == ["API_TOKEN"] and "tok-1234567890" not in plan.model_dump_json()


def test_the_hosts_extra_ca_certificates_go_into_the_build_context(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    from runner.base import trust
    from runner.sandbox import images

    monkeypatch.setattr(trust, "HOST_EXTRA_CA_DIR", Path(str(tmp_path)) / "none")
    before = images.context_digest("base")
    cert = Path(str(tmp_path)) / "corp-proxy.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIBcorp\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv(trust.EXTRA_CA_ENV, str(cert))
    context = Path(str(tmp_path)) / "ctx"
    after = images._prepare_context("base", context)
    assert after != before  # a new CA rebuilds the image
    assert [p.read_text() for p in (context / "extra-ca").glob("*.crt")] == [cert.read_text()]


class _BindingFake(FakeBackend, HostMounts):
    """The fake engine, said to mount the host's directories themselves (as Docker does)."""


def test_the_seed_is_taken_only_where_mounts_are_the_hosts_directories(repo: GitRepo) -> None:
    """A race asks for the seed; an engine whose mounts are copies (Kubernetes, here the fake) gets a full clone."""
    plain = plan_run(FakeBackend(), request(repo, seed=True))
    assert plain.seed is None
    assert SEED_DIR not in {m.target for m in plain.mounts}
    binding = plan_run(_BindingFake(), request(repo, seed=True))
    assert binding.seed == str(seed_dir(repo.path))
    seed_mounts = [m for m in binding.mounts if m.target == SEED_DIR]
    assert [(m.source, m.read_only) for m in seed_mounts] == [(binding.seed, True)]
    assert plan_run(_BindingFake(), request(repo)).seed is None  # a session alone: a full clone
