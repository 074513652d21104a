"""`--image` with an image that lacks what a run needs is refused at once, in one line, before any iteration."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker


@pytest.fixture
def image_without_relay(tmp_path: Path) -> Iterator[str]:
    """harness-base with git and python3 but without harness-relay (built offline, removed after)."""
    tag = f"harness-test-norelay:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(
        "FROM harness-base:latest\nUSER root\nRUN rm /usr/local/bin/harness-relay\nUSER 10001:10001\n"
    )
    subprocess.run(["docker", "build", "-q", "--network", "none", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}",
                    "-t", tag, str(tmp_path)], check=True, capture_output=True)  # fmt: skip
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)


def test_an_image_without_harness_relay_is_refused_before_the_first_iteration(
    repo: GitRepo, image_without_relay: str
) -> None:
    # Control: the image has git and python3, and lacks only the relay.
    probe = subprocess.run(["docker", "run", "--rm", "--network", "none", image_without_relay, "sh", "-c",
                            "command -v git python3 && ! command -v harness-relay"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert probe.returncode == 0, probe
    r = harness(*run_args("norelay", "--image", image_without_relay, cmd="true", iterations=1, as_json=False),
                cwd=repo.path)  # fmt: skip
    assert r.code == 9, r.stderr
    assert "the image has no harness-relay" in r.stderr and "build it FROM harness-base" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not list(repo.journal("norelay").glob("iteration-*.json"))
