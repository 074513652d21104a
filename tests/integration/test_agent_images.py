"""The agent images (images/claude-code, codex, aider): built with the real `harness images build`,
each CLI starts as the agent uid under the hardened spec with no network, under runc and gVisor.

A first build downloads from the registries (minutes); an image whose context-digest label is
current is reused, so a second run of the suite stays fast.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import runner
from runner.backends.base import LABEL_CONTEXT, Backend
from runner.backends.watchdog import run_container
from runner.base.errors import ImageMissingError
from runner.base.layout import AGENT_UID
from runner.base.output import CappedBuffer
from runner.record.models import Limits
from runner.sandbox import images
from runner.sandbox.container import hardened_spec, labels
from tests.helpers import GitRepo, harness, one_worker_at_a_time, run_args

pytestmark = pytest.mark.docker

# image name -> (the CLI, the build argument holding its pinned version)
AGENTS = {
    "claude-code": ("claude", "CLAUDE_CODE_VERSION"),
    "codex": ("codex", "CODEX_VERSION"),
    "aider": ("aider", "AIDER_VERSION"),
}
BUILD_TIMEOUT = 900  # a first build on a fresh machine downloads a few hundred MB
# What each image sets so the CLI neither updates itself nor phones home.
QUIET_ENV = {
    "claude-code": ("DISABLE_AUTOUPDATER=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"),
    "codex": ("CODEX_HOME=/home/agent/.codex",),
    "aider": ("AIDER_CHECK_UPDATE=false", "AIDER_ANALYTICS=false", "LITELLM_LOCAL_MODEL_COST_MAP=True"),
}


def pinned_version(name: str) -> str:
    dockerfile = (Path(images.__file__).resolve().parents[2] / "images" / name / "Dockerfile").read_text()
    match = re.search(rf"^ARG {AGENTS[name][1]}=(\S+)$", dockerfile, re.MULTILINE)
    assert match, f"images/{name}/Dockerfile pins no {AGENTS[name][1]}"
    return match.group(1)


@pytest.fixture(scope="module")
def backend() -> Backend:
    from runner.backends.docker.engine import DockerBackend

    return DockerBackend()


@pytest.fixture(scope="module", params=list(AGENTS))
def agent_image(request: pytest.FixtureRequest, backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The agent's image, built through the CLI unless its label says it is current."""
    name = str(request.param)
    tag = images.tag_for(name)
    with one_worker_at_a_time(f"image-{name}", tmp_path_factory):  # one build, whichever worker asks first
        if images.image_state(backend, tag) != "present":
            started = time.monotonic()
            r = harness("images", "build", name, "--json", cwd=tmp_path_factory.mktemp("build"),
                        timeout=BUILD_TIMEOUT)  # fmt: skip
            assert r.code == 0, r.stderr[-3000:]
            assert r.json() == {"image": tag}
            print(f"built {tag} in {time.monotonic() - started:.0f} s")  # shown with -s: the first-build cost
    assert backend.image_label(tag, LABEL_CONTEXT) == images.context_digest(name)
    return name


def _hardened(backend: Backend, image: str, command: str, runtime: str) -> tuple[int | None, str]:
    spec = hardened_spec(
        image=image,
        command=["sh", "-c", f"exec 2>&1; {command}"],
        limits=Limits(memory_bytes=1024**3, pids=256),
        mounts=(),
        labels=labels("agent-images", "k", "agent"),
        runtime=runtime,
    )
    assert spec.network == "none" and spec.user == f"{AGENT_UID}:{AGENT_UID}"
    out = CappedBuffer()
    result = run_container(backend, spec, timeout=120, output=out)
    return result.exit_code, out.text()


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_the_cli_starts_as_the_agent_uid_with_no_network(backend: Backend, agent_image: str, runtime: str) -> None:
    cli, _ = AGENTS[agent_image]
    code, out = _hardened(
        backend, images.tag_for(agent_image),
        f"id -u; {cli} --version; echo cli-exit=$?; env",
        runtime,
    )  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == str(AGENT_UID), out
    assert pinned_version(agent_image) in lines[1], out
    assert "cli-exit=0" in lines, out
    for setting in QUIET_ENV[agent_image]:
        assert setting in lines, f"{setting} missing from the image's environment:\n{out}"


def test_build_streams_progress_on_stderr_and_keeps_stdout_for_the_result(tmp_path: Path) -> None:
    r = harness("images", "build", "base", "--json", cwd=tmp_path, timeout=BUILD_TIMEOUT)
    assert r.code == 0, r.stderr[-3000:]
    assert r.json() == {"image": "harness-base:latest"}  # stdout is the JSON result and nothing else
    steps = [ln for ln in r.stderr.splitlines() if re.match(r"harness: harness-base:latest: Step \d+/\d+ : ", ln)]
    assert steps and steps[0].endswith("FROM debian:bookworm-slim"), r.stderr[-3000:]
    assert "Successfully tagged harness-base:latest" in r.stderr
    assert "\x1b" not in r.stderr


@dataclass
class PrivateHarness:
    """A copy of the harness whose build contexts add one agent image under a name nobody else
    uses: it is missing for this test alone, while the shared images stay untouched."""

    lib: Path
    name: str

    @property
    def tag(self) -> str:
        return images.tag_for(self.name)


@pytest.fixture
def private_harness(
    backend: Backend, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateHarness]:
    tag = images.tag_for("aider")
    with one_worker_at_a_time("image-aider", tmp_path_factory):
        if images.image_state(backend, tag) != "present":  # the rebuild below is then served from the cache
            r = harness("images", "build", "aider", cwd=tmp_path, timeout=BUILD_TIMEOUT)
            assert r.code == 0, r.stderr[-3000:]
    source = Path(runner.__file__).resolve().parent
    lib = tmp_path / "lib"
    shutil.copytree(source, lib / "runner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source.parent / "images", lib / "images", ignore=shutil.ignore_patterns("__pycache__"))
    name = f"aider-test-{uuid.uuid4().hex[:8]}"
    shutil.copytree(lib / "images" / "aider", lib / "images" / name)
    private = PrivateHarness(lib, name)
    try:
        yield private
    finally:
        subprocess.run(["docker", "rmi", private.tag], check=False, capture_output=True)


def test_run_with_a_missing_agent_image_builds_it_first(
    backend: Backend, repo: GitRepo, private_harness: PrivateHarness
) -> None:
    """The chosen behaviour (docs/agents.md): `run` builds a missing harness image, saying which
    `harness images build` command it runs, with the build's progress on stderr."""
    tag, name = private_harness.tag, private_harness.name
    assert not backend.image_exists(tag)
    report = 'echo \'{"state": "done", "summary": "nothing to do"}\' > "$HARNESS_STATUS_FILE"'
    r = harness(*run_args("missing-image", "--image", tag, cmd=report, iterations=1), cwd=repo.path,
                timeout=BUILD_TIMEOUT, env={"PYTHONPATH": str(private_harness.lib)})  # fmt: skip
    assert f"image {tag} is missing; building it now, as 'harness images build {name}' does" in r.stderr, r.stderr
    assert f"{tag}: Step 1/" in r.stderr
    assert r.code == 0, r.stderr[-3000:]
    assert r.json()["status"] == "completed"
    assert backend.image_label(tag, LABEL_CONTEXT) == backend.image_label(images.tag_for("aider"), LABEL_CONTEXT)


def test_a_build_that_loses_a_cached_layer_to_a_concurrent_prune_is_built_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`harness gc` prunes dangling harness images (a multi-stage build's first stage among them);
    when that happens mid-build the engine fails the build, and one more attempt rebuilds the layer."""
    from runner.backends.docker.engine import DockerBackend

    race = {"error": "failed to get digest sha256:9bdf: open /var/lib/docker/image/overlay2/imagedb/...: no such file"}
    streams = [[{"stream": "Step 1/2 : FROM harness-base:latest\n"}, race], [{"stream": "Successfully built 1234\n"}]]

    class Api:
        def build(self, **_: object) -> Iterator[dict[str, str]]:
            yield from streams.pop(0)

    engine = DockerBackend()
    engine._client = type("Client", (), {"api": Api()})()
    engine.build_image(context=tmp_path, tag="harness-test-race:latest", labels={})
    assert streams == []  # both attempts ran; the second succeeded
    assert "vanished mid-build" in caplog.text

    streams[:] = [[race], [race]]
    with pytest.raises(ImageMissingError, match="failed to get digest"):
        engine.build_image(context=tmp_path, tag="harness-test-race:latest", labels={})
    assert streams == []
