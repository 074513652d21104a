"""Which image a run uses and why: --image > configuration > devcontainer.json > the agent's own image; an image
that is not a harness image is derived. Decided without building (fake backend, real git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.fake import FakeBackend, FakeCluster
from runner.sandbox.derive import derived_tag
from runner.sandbox.environment import prepare_environment, resolve_environment
from tests.helpers import GitRepo

DC = ".devcontainer/devcontainer.json"


def _commit(repo: GitRepo, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = repo.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "files")
    return repo.git("rev-parse", "HEAD")


@pytest.fixture
def backend() -> FakeBackend:
    b = FakeBackend()
    b.images |= {"python:3.12", "node:22", "harness-claude-code:latest"}
    return b


def test_without_image_or_devcontainer_the_agents_own_image(repo: GitRepo, backend: FakeBackend) -> None:
    plan = resolve_environment(backend, repo=repo.path, base_commit=repo.git("rev-parse", "HEAD"),
                               agent="claude-code", default_image="harness-claude-code:latest")  # fmt: skip
    assert (plan.image, plan.source, plan.base, plan.devcontainer) == (
        "harness-claude-code:latest",
        "default",
        None,
        None,
    )
    assert plan.state == "buildable"  # the fake's image has no context label: it is built as harness images are
    assert plan.why == "the agent's own image: no --image given and no devcontainer.json"
    assert backend.builds == []


def test_an_ordinary_image_flag_is_derived(repo: GitRepo, backend: FakeBackend) -> None:
    plan = resolve_environment(backend, repo=repo.path, base_commit="HEAD", agent="claude-code",
                               default_image="harness-claude-code:latest", image="python:3.12")  # fmt: skip
    tag = derived_tag("python:3.12", "claude-code")
    assert (plan.image, plan.source, plan.base, plan.state) == (tag, "flag", "python:3.12", "buildable")
    assert plan.why == (
        f"--image python:3.12 is not a harness image: it runs as {tag} (python:3.12 + claude-code, derived by the "
        "harness)"
    )
    assert backend.builds == []
    assert prepare_environment(backend, plan, repo=repo.path) == tag
    assert backend.builds[-1].tag == tag


def test_a_harness_image_or_one_built_on_it_is_used_as_it_is(repo: GitRepo, backend: FakeBackend) -> None:
    plan = resolve_environment(backend, repo=repo.path, base_commit="HEAD", agent="claude-code",
                               default_image="harness-claude-code:latest", image="harness-codex:latest")  # fmt: skip
    assert (plan.image, plan.base) == ("harness-codex:latest", None)
    backend.images.add("mine:1")
    backend.image_labels["mine:1"] = {"io.solo-harness.context-digest": "inherited"}  # FROM harness-base
    plan = resolve_environment(backend, repo=repo.path, base_commit="HEAD", agent="custom",
                               default_image="harness-base:latest", image="mine:1", image_source="config")  # fmt: skip
    assert (plan.image, plan.base, plan.source, plan.state) == ("mine:1", None, "config", "present")
    assert plan.why == "the configuration's image mine:1, a harness image, used as it is"


def test_a_devcontainer_image_is_derived_with_its_setup_env_and_notes(repo: GitRepo, backend: FakeBackend) -> None:
    commit = _commit(repo, {DC: """{
        // the project's environment
        "image": "node:22",
        "features": {"ghcr.io/devcontainers/features/python:1": {}},
        "containerEnv": {"NODE_ENV": "test"},
        "onCreateCommand": "npm ci",
        "postCreateCommand": ["npm", "run", "build"],
    }"""})  # fmt: skip
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="codex",
                               default_image="harness-codex:latest")  # fmt: skip
    assert (plan.source, plan.base, plan.image) == ("devcontainer", "node:22", derived_tag("node:22", "codex"))
    assert plan.devcontainer == DC and plan.devcontainer_build is None
    assert plan.setup_commands == ["npm ci", "npm run build"]
    assert plan.container_env == {"NODE_ENV": "test"}
    assert plan.notes == [f"{DC}: features ignored: features are fetched from a registry and cannot be installed here"]
    assert plan.why.startswith(f"{DC} names the image node:22: it runs as harness-derived/codex:")


def test_image_flag_wins_over_the_devcontainer_whose_setup_still_applies(repo: GitRepo, backend: FakeBackend) -> None:
    commit = _commit(repo, {DC: '{"image": "node:22", "postCreateCommand": "npm ci"}'})
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="codex",
                               default_image="harness-codex:latest", image="python:3.12")  # fmt: skip
    assert (plan.source, plan.base) == ("flag", "python:3.12")
    assert plan.setup_commands == ["npm ci"]
    assert f"{DC}: its image is not used: --image python:3.12 wins" in plan.notes


def test_the_devcontainer_can_be_turned_off(repo: GitRepo, backend: FakeBackend) -> None:
    commit = _commit(repo, {DC: '{"image": "node:22", "postCreateCommand": "npm ci"}'})
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="codex",
                               default_image="harness-codex:latest", use_devcontainer=False)  # fmt: skip
    assert (plan.source, plan.setup_commands, plan.devcontainer) == ("default", [], None)


def test_a_devcontainer_without_image_or_build_keeps_the_default_image(repo: GitRepo, backend: FakeBackend) -> None:
    commit = _commit(repo, {".devcontainer.json": '{"dockerComposeFile": "c.yml", "postCreateCommand": "make"}'})
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="demo",
                               default_image="harness-base:latest")  # fmt: skip
    assert (plan.source, plan.image, plan.setup_commands) == ("default", "harness-base:latest", ["make"])
    assert plan.why == "the agent's own image: .devcontainer.json names no image to use"
    assert any("Docker Compose is not supported" in n for n in plan.notes)


def test_a_devcontainer_build_is_planned_then_built_from_the_commit_then_derived(
    repo: GitRepo, backend: FakeBackend
) -> None:
    commit = _commit(repo, {
        DC: '{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"PY": "3.12"}}}',
        ".devcontainer/Dockerfile": "ARG PY\nFROM python:${PY}\nCOPY . /src\n",
    })  # fmt: skip
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="claude-code",
                               default_image="harness-claude-code:latest")  # fmt: skip
    build = plan.devcontainer_build
    assert build is not None and build.commit == commit and build.build.args == {"PY": "3.12"}
    assert (plan.source, plan.base, plan.state) == ("devcontainer", build.tag, "buildable")
    assert plan.image == derived_tag(build.tag, "claude-code")
    assert plan.why.startswith(f"{DC} builds .devcontainer/Dockerfile: it runs as harness-derived/claude-code:")
    assert "(its image + claude-code, derived by the harness)" in plan.why
    assert backend.builds == []  # deciding builds nothing
    assert prepare_environment(backend, plan, repo=repo.path) == plan.image
    tags = [b.tag for b in backend.builds]
    assert tags[0] == build.tag and tags[-1] == plan.image
    assert backend.builds[0].buildargs == {"PY": "3.12"}
    again = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="claude-code",
                                default_image="harness-claude-code:latest")  # fmt: skip
    assert again.state == "present"


def test_a_malformed_devcontainer_stops_the_decision(repo: GitRepo, backend: FakeBackend) -> None:
    from runner.base.errors import UsageError

    commit = _commit(repo, {DC: '{"image": }'})
    with pytest.raises(UsageError, match=r"^\.devcontainer/devcontainer\.json: not valid JSON"):
        resolve_environment(backend, repo=repo.path, base_commit=commit, agent="codex",
                            default_image="harness-codex:latest")  # fmt: skip


def test_on_a_backend_whose_cluster_pulls_images_nothing_is_derived(repo: GitRepo, tmp_path: Path) -> None:
    commit = _commit(repo, {DC: '{"image": "node:22", "postCreateCommand": "npm ci"}'})
    plan = resolve_environment(FakeCluster(), repo=repo.path, base_commit=commit, agent="codex",
                               default_image="harness-codex:latest")  # fmt: skip
    assert (plan.image, plan.source, plan.state) == ("harness-codex:latest", "default", "remote")
    assert any("not used on the fake backend" in n for n in plan.notes)
    plan = resolve_environment(FakeCluster(), repo=repo.path, base_commit=commit, agent="codex",
                               default_image="harness-codex:latest", image="registry.example/x:1")  # fmt: skip
    assert (plan.image, plan.base, plan.state) == ("registry.example/x:1", None, "remote")
