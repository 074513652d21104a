"""A repository's devcontainer.json drives the run's environment (issue 17, item 2), end to end: its `build`
gives the image, its `containerEnv` every container, its create commands the setup phase; what cannot work
here is named in one line; `--image` wins over it. The Dockerfile builds on the offline harness-base, so the
test needs no registry and no network."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker

DEVCONTAINER = """{
  // JSONC, as editors write it
  "name": "calc",
  "build": {"dockerfile": "Dockerfile", "args": {"FLAVOUR": "from-devcontainer"}},
  "containerEnv": {"PROJECT_MODE": "devcontainer-env"},
  "onCreateCommand": "echo on-create > .oncreate",
  "postCreateCommand": ["sh", "-c", "echo post-create:$PROJECT_MODE > .postcreate"],
  "features": {"ghcr.io/devcontainers/features/node:1": {}},
  "forwardPorts": [3000],
}
"""
DOCKERFILE = """FROM harness-base:latest
ARG FLAVOUR=plain
USER root
RUN echo "$FLAVOUR" > /etc/flavour
USER 10001:10001
"""
AGENT = (
    'cat /etc/flavour .oncreate .postcreate > seen.txt && echo "env:$PROJECT_MODE" >> seen.txt && '
    "git add seen.txt && git commit -qm seen && "
    'printf \'%s\' \'{"state": "done", "summary": "looked"}\' > "$HARNESS_STATUS_FILE"'
)


@pytest.fixture
def devrepo(repo: GitRepo) -> GitRepo:
    (repo.path / ".devcontainer").mkdir()
    (repo.path / ".devcontainer/devcontainer.json").write_text(DEVCONTAINER)
    (repo.path / ".devcontainer/Dockerfile").write_text(DOCKERFILE)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a devcontainer")
    return repo


def test_the_devcontainer_gives_the_image_the_env_and_the_setup(devrepo: GitRepo) -> None:
    plan = harness(*run_args("dc", "--dry-run", cmd=AGENT), cwd=devrepo.path)
    assert plan.code == 0, plan.stderr
    environment = json.loads(plan.stdout)["environment"]
    assert environment["source"] == "devcontainer" and environment["devcontainer"].endswith("devcontainer.json")
    assert json.loads(plan.stdout)["setup"]["source"] == "devcontainer"
    # What cannot work here is named, one line each (features, ports), not silently skipped.
    notes = [line for line in plan.stderr.splitlines() if "devcontainer.json" in line]
    assert any("features" in n for n in notes) and any("forwardPorts" in n for n in notes), plan.stderr
    r = harness(*run_args("dc", cmd=AGENT, iterations=1), cwd=devrepo.path, timeout=600)
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    seen = devrepo.git("show", "harness/dc:seen.txt").splitlines()
    assert seen == ["from-devcontainer", "on-create", "post-create:devcontainer-env", "env:devcontainer-env"]
    assert r.json()["setup"]["source"] == "devcontainer" and r.json()["setup"]["passed"]
    # The setup's files are outside git: never on the branch.
    files = devrepo.git("ls-tree", "-r", "--name-only", "harness/dc").splitlines()
    assert ".oncreate" not in files and ".postcreate" not in files and "seen.txt" in files
    built = [environment["image"], *([environment["devcontainer_build"]["tag"]] if environment.get("devcontainer_build")
                                     else [])]  # fmt: skip
    subprocess.run(["docker", "rmi", "-f", *built], capture_output=True, check=False)  # made for this test


def test_image_wins_over_the_devcontainer(devrepo: GitRepo) -> None:
    r = harness(*run_args("flag", "--image", "harness-base:latest", "--dry-run", cmd="true"), cwd=devrepo.path)
    assert r.code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["image"] == "harness-base:latest" and plan["environment"]["source"] == "flag"
