"""The top-level Dockerfile: the runner in a container drives the host's engine through its socket.

The repository and the harness home are mounted at the same paths as on the host (the runner makes bind
mounts by host path), and so is the host's CA directory (what goes into the harness's images).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.base import trust
from runner.sandbox import images
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, harness, run_args

# One worker builds the runner image and runs both tests (`make test` runs the suite on parallel workers).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900), pytest.mark.xdist_group("containerised")]

ROOT = Path(__file__).resolve().parents[2]
CA_DIR = "/usr/local/share/ca-certificates"
RUNNER_LABEL = f"io.solo-harness.runner-test={uuid.uuid4().hex[:12]}"


def _socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


@pytest.fixture(scope="module")
def runner_image() -> Iterator[str]:
    tag = f"harness-runner-test-{uuid.uuid4().hex[:8]}:latest"
    extra_ca = "\n".join(p.read_text() for p in trust.extra_ca_files())  # the host's proxy CA, for pip
    build = subprocess.run(
        ["docker", "build", "-q", "--network", "host", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}",
         "--build-arg", f"EXTRA_CA={extra_ca}", "-t", tag, str(ROOT)],
        capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def _run_in_container(
    image: str, repo: Path, home: Path | None, *args: str, workdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    sock = _socket()
    mounts = ["-v", f"{sock}:/var/run/docker.sock", "-v", f"{repo}:{repo}", "-w", str(workdir or repo)]
    if home is not None:
        mounts += ["-v", f"{home}:{home}", "-e", f"HARNESS_HOME={home}"]
    if Path(CA_DIR).is_dir():
        mounts += ["-v", f"{CA_DIR}:{CA_DIR}:ro"]
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}",
         "--label", RUNNER_LABEL, "--user", f"{os.getuid()}:{os.getgid()}",
         "--group-add", str(os.stat(sock).st_gid), *mounts,
         "-e", f"HARNESS_CONTAINER_LABELS={os.environ['HARNESS_CONTAINER_LABELS']}",
         image, *args],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _base_image_id() -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", images.DEFAULT_IMAGE],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_demo_session_through_the_containerised_runner(runner_image: str, repo: GitRepo, harness_home: Path) -> None:
    built = harness("images", "build", "base", cwd=repo.path)  # current as the host sees it
    assert built.code == 0, built.stderr
    base_before = _base_image_id()
    (repo.path / "src").mkdir()

    r = _run_in_container(
        runner_image, repo.path, harness_home,
        *run_args("boxed", agent="demo", objective="Record two steps", iterations=3),
        workdir=repo.path / "src",  # the repository is found from a subdirectory, as on the host
    )  # fmt: skip

    assert r.returncode == 0, r.stderr[-3000:]
    status = json.loads(r.stdout)
    assert status["status"] == "completed" and status["repo"] == str(repo.path)
    assert status["workspace"].startswith(str(harness_home))
    # The branch is in the host's repository, with the demo agent's two commits on the base.
    assert repo.git("log", "--format=%s", "main..harness/boxed").splitlines() == ["demo: step 2", "demo: step 1"]
    assert (repo.journal("boxed") / "run-summary.json").is_file()
    # The host can go on with the session the container made.
    assert harness("status", "--session", "boxed", "--json", cwd=repo.path).json()["status"] == "completed"
    # The runner saw the host's CA directory: it did not rebuild the shared base image.
    assert _base_image_id() == base_before
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={RUNNER_LABEL}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert left == []


def test_a_harness_home_that_is_not_mounted_is_refused(runner_image: str, repo: GitRepo) -> None:
    r = _run_in_container(runner_image, repo.path, None, *run_args("s", "--dry-run", as_json=False))
    assert r.returncode == 2 and "HARNESS_HOME must name a host directory mounted at the same path" in r.stderr
    assert repo.git("for-each-ref", "refs/heads/harness") == ""
