"""Any image as the base, for real: `IMG + agent` derived from images built offline here FROM debian:bookworm-slim
(no python3; git copied in from harness-base, so that no derivation needs a package mirror: tests reach only
loopback; installing a missing git through the base's apt-get is in the generated Dockerfile, checked by
tests/unit/test_derive.py), run with the harness's hardening; reused while nothing changed, rebuilt when the base
changed; refusals in one line; a devcontainer.json's build made from a commit. Every image made here carries this
run's test label and is removed after."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.backends.docker.engine import DockerBackend
from runner.base.errors import ImageMissingError
from runner.sandbox import images
from runner.sandbox.derive import LABEL_AGENT_DIGEST, LABEL_BASE_ID, derive, derive_state, derived_tag
from runner.sandbox.environment import prepare_environment, resolve_environment
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, harness

# One worker builds the module's bases once and removes what the module made (`made`) at its end.
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("derive")]

BUILD_TIMEOUT = 600
TEST_LABEL = f"io.solo-harness.test={TEST_RUN_LABEL}"
# How the harness starts every container (runner/sandbox/container.py): a derived image must work under all of it.
HARDENED = [
    "--network", "none", "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--init", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",
    "--tmpfs", "/home/agent:rw,nosuid,nodev,size=64m,uid=10001,gid=10001,mode=0700", "-e", "HOME=/home/agent",
]  # fmt: skip


def _relay_is_static() -> bool:
    """harness-base's relay is the static C binary (not yet the python3 script it replaces)."""
    command = ["head", "-c", "4", "/usr/local/bin/harness-relay"]
    head = subprocess.run(["docker", "run", "--rm", "--network", "none", images.DEFAULT_IMAGE, *command],
                          capture_output=True, check=True).stdout  # fmt: skip
    return head == b"\x7fELF"


STATIC_RELAY = _relay_is_static()
# git and what it needs from harness-base (the same Debian release): an ordinary image with git, built offline.
OFFLINE_GIT = "".join(
    f"COPY --from={images.DEFAULT_IMAGE} {path} {path}\n"
    for path in ("/usr/bin/git", "/usr/lib/git-core", "/usr/share/git-core")
)
PENDING_RELAY = (
    "pending the static harness-relay: harness-base's relay is still a python3 script, which a base without "
    "python3 cannot run (rebuild harness-base once images/base has the C relay)"
)


def _build(tmp: Path, dockerfile: str, tag: str) -> str:
    (tmp / "Dockerfile").write_text(dockerfile)
    subprocess.run(["docker", "build", "-q", "--network", "host", "--label", TEST_LABEL, "--label",
                    "io.solo-harness.managed=1", "-t", tag, str(tmp)], check=True, capture_output=True,
                   timeout=BUILD_TIMEOUT)  # fmt: skip
    return tag


def _image_id(image: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def _labels(image: str) -> dict[str, str]:
    import json

    out = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", image], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return dict(json.loads(out) or {})


def _run(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--label", TEST_LABEL, *HARDENED, image, "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def _rmi(*images_: str) -> None:
    subprocess.run(["docker", "rmi", "-f", *images_], capture_output=True, check=False)


class CountingBackend(DockerBackend):
    """The Docker backend, counting the builds it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.built: list[str] = []

    def build_image(self, **kwargs: Any) -> None:
        self.built.append(str(kwargs["tag"]))
        super().build_image(**kwargs)


@pytest.fixture(scope="module")
def made() -> Iterator[list[str]]:
    """Tags made by this module's tests, removed at the end, with the untagged images that carry this run's
    test label (what a derivation superseded, the steps of a refused one: they inherit it from the base)."""
    tags: list[str] = []
    yield tags
    _rmi(*tags)
    for _ in range(4):  # children before parents: a parent goes on a later pass
        listed = subprocess.run(
            ["docker", "images", "-a", "--filter", f"label={TEST_LABEL}", "--format", "{{.ID}} {{.Repository}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        untagged = sorted({line.split()[0] for line in listed.splitlines() if line.endswith(" <none>")})
        if not untagged:
            break
        _rmi(*untagged)


@pytest.fixture(scope="module")
def plain_base(tmp_path_factory: pytest.TempPathFactory, made: list[str]) -> str:
    """debian:bookworm-slim with neither git nor python3: an ordinary image."""
    tag = f"harness-test-plain:{uuid.uuid4().hex[:8]}"
    made.append(tag)
    return _build(tmp_path_factory.mktemp("plain"), f"FROM debian:bookworm-slim\nRUN echo {tag} > /etc/base\n", tag)


@pytest.fixture(scope="module")
def git_base(tmp_path_factory: pytest.TempPathFactory, plain_base: str, made: list[str]) -> str:
    """The plain base with git (and still no python3): a derivation from it installs nothing."""
    tag = f"harness-test-git:{uuid.uuid4().hex[:8]}"
    made.append(tag)
    return _build(tmp_path_factory.mktemp("git"), f"FROM {plain_base}\n{OFFLINE_GIT}", tag)


@pytest.mark.skipif(not STATIC_RELAY, reason=PENDING_RELAY)
def test_claude_code_on_an_ordinary_image_runs_as_the_agent_with_git_and_the_relay(
    git_base: str, made: list[str]
) -> None:
    control = _run(git_base, "command -v python3 || echo no-python; id -u agent 2>/dev/null || echo no-agent")
    assert control.stdout.split() == ["no-python", "no-agent"], control  # the base has no python3 and no agent
    backend = CountingBackend()
    tag = derive(backend, git_base, "claude-code")
    made.append(tag)
    assert tag == derived_tag(git_base, "claude-code") and backend.built[-1] == tag
    probe = _run(tag, "id -u; id -g; git --version; command -v harness-relay; claude --version; "
                      "ls -ld /workspace /home/agent | cut -d' ' -f3; "
                      "harness-relay --listen 127.0.0.1:8787=/tmp/absent.sock -- sh -c 'echo relayed'")  # fmt: skip
    lines = probe.stdout.splitlines()
    assert probe.returncode == 0, probe
    assert lines[:2] == ["10001", "10001"]
    assert lines[2].startswith("git version ") and lines[3] == "/usr/local/bin/harness-relay"
    assert "(Claude Code)" in lines[4] and lines[5:7] == ["agent", "agent"] and lines[7] == "relayed"
    labels = _labels(tag)
    assert labels[LABEL_BASE_ID] == _image_id(git_base)
    assert labels[LABEL_AGENT_DIGEST] == images.context_digest("claude-code")
    assert labels["io.solo-harness.managed"] == "1" and labels["io.solo-harness.test"] == TEST_RUN_LABEL

    # The same base and agent again: reused, nothing built.
    again = CountingBackend()
    assert derive(again, git_base, "claude-code") == tag and again.built == []
    assert derive_state(again, git_base, "claude-code") == "present"


def test_a_changed_base_rebuilds_the_derived_image_under_the_same_tag(
    git_base: str, made: list[str], tmp_path: Path
) -> None:
    name = f"harness-test-moving:{uuid.uuid4().hex[:8]}"
    made.append(name)
    _build(tmp_path, f"FROM {git_base}\nRUN echo one > /etc/version\n", name)
    backend = CountingBackend()
    tag = derive(backend, name, "codex")
    made.append(tag)
    first = _image_id(tag)
    assert _run(tag, "cat /etc/version; codex --version").stdout.split()[:2] == ["one", "codex-cli"]
    _build(tmp_path, f"FROM {git_base}\nRUN echo two > /etc/version\n", name)  # the user rebuilt their image
    assert derive_state(backend, name, "codex") == "stale"
    assert derive(backend, name, "codex") == tag and backend.built.count(tag) == 2
    assert _image_id(tag) != first and _labels(tag)[LABEL_BASE_ID] == _image_id(name)
    assert _run(tag, "cat /etc/version").stdout.strip() == "two"
    _rmi(first)  # the superseded one (dangling; `harness gc` would prune it)


def test_claude_code_on_a_musl_base_is_refused_in_one_line(made: list[str], tmp_path: Path) -> None:
    """An honest stand-in for Alpine: no Alpine image can be had here (no registry), so this is Debian with the
    file the refusal looks for (musl's loader, /lib/ld-musl-x86_64.so.1) created empty. It shows the check and
    its message, not Claude Code failing on real musl."""
    tag = _build(tmp_path, "FROM debian:bookworm-slim\nRUN touch /lib/ld-musl-x86_64.so.1\n",
                 f"harness-test-musl:{uuid.uuid4().hex[:8]}")  # fmt: skip
    made.append(tag)
    with pytest.raises(ImageMissingError) as info:
        derive(DockerBackend(), tag, "claude-code")
    assert info.value.message == (
        f"cannot derive an image for claude-code from {tag}: Claude Code's native binary needs glibc, and this "
        "image is musl-based (/lib/ld-musl-x86_64.so.1: Alpine?): use a Debian- or Ubuntu-based image"
    )


def test_aider_without_a_usable_python_is_refused_in_one_line(plain_base: str) -> None:
    with pytest.raises(ImageMissingError) as info:
        derive(DockerBackend(), plain_base, "aider")
    expected = "python3's venv and ensurepip modules" if not STATIC_RELAY else "and this image has no python3"
    assert info.value.message.startswith(f"cannot derive an image for aider from {plain_base}: aider needs python3")
    assert expected in info.value.message and "\n" not in info.value.message


def test_a_base_without_a_shell_is_refused_in_one_line(made: list[str], tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("x\n")
    tag = _build(tmp_path, "FROM scratch\nCOPY marker /marker\n", f"harness-test-noshell:{uuid.uuid4().hex[:8]}")
    made.append(tag)
    with pytest.raises(ImageMissingError, match=r": it has no /bin/sh \(the harness and the agents run"):
        derive(DockerBackend(), tag, "custom")


def test_a_missing_base_is_not_pulled() -> None:
    with pytest.raises(ImageMissingError, match="is not present locally and the harness pulls nothing"):
        derive(DockerBackend(), f"harness-test-absent:{uuid.uuid4().hex[:8]}", "codex")


@pytest.mark.skipif(STATIC_RELAY, reason="the relay is static: a base without python3 derives (test below)")
def test_while_the_relay_is_a_python_script_a_base_without_python_is_refused(made: list[str], tmp_path: Path) -> None:
    tag = _build(tmp_path, "FROM debian:bookworm-slim\nRUN true\n", f"harness-test-nopy:{uuid.uuid4().hex[:8]}")
    made.append(tag)
    with pytest.raises(ImageMissingError, match=r"harness-relay from harness-base:latest is a script for "
                       r"/usr/bin/python3, which this image lacks"):  # fmt: skip
        derive(DockerBackend(), tag, "claude-code")


def test_the_cli_derives_with_from_and_prints_only_the_tag_with_q(git_base: str, tmp_path: Path) -> None:
    r = harness("images", "build", "base", "--from", git_base, "-q", cwd=tmp_path, timeout=BUILD_TIMEOUT)
    assert r.code == 0, r.stderr
    assert r.stdout == derived_tag(git_base, "custom") + "\n", r
    # No build progress on stderr either. The one line allowed is the harness's own recovery when another
    # test's `harness gc` pruned a cached layer mid-build (images are machine-wide; CI saw it).
    assert all(line.startswith("harness: a cached layer of ") for line in r.stderr.splitlines()), r
    try:
        assert _run(r.stdout.strip(), "id -u && git --version").stdout.startswith("10001\ngit version")
        bad = harness("images", "build", "nope", "--from", git_base, cwd=tmp_path)
        assert bad.code == 2 and bad.stderr.startswith("harness: error: no harness image named 'nope'"), bad
    finally:
        _rmi(r.stdout.strip())


# ----------------------------------------------------------------------------------------- devcontainer.json


@pytest.mark.skipif(not STATIC_RELAY, reason=PENDING_RELAY)
def test_a_devcontainer_build_from_the_base_commit_gives_a_runnable_image(repo: GitRepo, made: list[str]) -> None:
    files = {
        ".devcontainer/devcontainer.json": """{
            // built with the repository as its context, a build argument and a target stage
            "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"GREETING": "hello"}, "target": "dev"},
            "containerEnv": {"PROJECT_HOME": "${containerWorkspaceFolder}"},
            "postCreateCommand": ["pip", "install", "-e", ".[test]"],
            "forwardPorts": [8000],
        }""",
        ".devcontainer/Dockerfile": (
            f"FROM debian:bookworm-slim AS dev\nARG GREETING\n{OFFLINE_GIT}COPY app.py /opt/app.py\n"
            f'RUN echo "$GREETING" > /etc/greeting\nLABEL {TEST_LABEL}\n'
            "FROM dev AS never\nRUN false\n"
        ),
    }  # fmt: skip
    for name, text in files.items():
        (repo.path / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / name).write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "devcontainer")
    commit = repo.git("rev-parse", "HEAD")
    (repo.path / "app.py").write_text("print('not committed')\n")  # the working tree is not what is built

    backend = CountingBackend()
    plan = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="custom",
                               default_image=images.DEFAULT_IMAGE)  # fmt: skip
    assert plan.devcontainer_build is not None and backend.built == []
    made.extend([plan.devcontainer_build.tag, plan.image])
    assert (plan.source, plan.state, plan.setup_commands) == ("devcontainer", "buildable", ["pip install -e '.[test]'"])
    assert plan.container_env == {"PROJECT_HOME": "/workspace"}
    assert plan.notes == [
        ".devcontainer/devcontainer.json: forwardPorts ignored: ports are not forwarded: the agent's container has "
        "no network"
    ]
    assert prepare_environment(backend, plan, repo=repo.path) == plan.image
    assert backend.built == [plan.devcontainer_build.tag, plan.image]
    probe = _run(plan.image, "id -u; cat /etc/greeting; cat /opt/app.py; git --version")
    assert probe.stdout.splitlines()[:3] == ["10001", "hello", "print('hello')"], probe
    assert probe.stdout.splitlines()[3].startswith("git version")
    # Decided again: everything is up to date, nothing is built.
    again = resolve_environment(backend, repo=repo.path, base_commit=commit, agent="custom",
                                default_image=images.DEFAULT_IMAGE)  # fmt: skip
    assert again.state == "present" and prepare_environment(backend, again, repo=repo.path) == plan.image
    assert backend.built == [plan.devcontainer_build.tag, plan.image]
