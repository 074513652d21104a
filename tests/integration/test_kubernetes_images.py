"""An ordinary image on Kubernetes, on the k8s lab (docs/kubernetes.md, "Images"): `run` derives nothing for a
cluster and refuses, in one line and before it creates anything, an ordinary image this machine holds, naming
`harness images build NAME --from IMG -q`; that command's tag, loaded into the lab's node with the lab's loader,
runs a real session whose agent works in the derived image (the base's files, no python3, uid 10001, git) and
whose commit comes back on the branch.

The base is built offline FROM debian:bookworm-slim, with git copied in from harness-base (as in
tests/integration/test_derive.py) and no python3: deriving from it installs nothing, so no package mirror is
reached. Every image made here carries this run's test label and is removed after, from this machine's engine
and from the lab's."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runner.sandbox import images
from runner.sandbox.derive import LABEL_BASE_ID, LABEL_DERIVED_AGENT, LABEL_DERIVED_FROM, derived_tag
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, harness, run_args
from tests.integration.test_kubernetes import cluster_jobs, k8s

if TYPE_CHECKING:
    from runner.backends.kubernetes.config import KubernetesConfig

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
LAB = ["bash", str(ROOT / "scripts" / "k8s-lab.sh")]
LAB_DOCKER = ["docker", "-H", "unix:///run/harness-k8s/docker.sock"]  # the lab's engine (docs/k8s-lab.md)
TEST_LABEL = f"io.solo-harness.test={TEST_RUN_LABEL}"
BUILD_TIMEOUT = 600
# git and what it needs from harness-base (the same Debian release): an ordinary image with git, built offline.
OFFLINE_GIT = "".join(
    f"COPY --from={images.DEFAULT_IMAGE} {path} {path}\n"
    for path in ("/usr/bin/git", "/usr/lib/git-core", "/usr/share/git-core")
)
# The agent: what it sees of its image goes into a file it commits; then it reports done.
AGENT = (
    "{ cat /etc/base; id -u; command -v python3 || echo no-python3; git --version | cut -d' ' -f1-2; } > seen.txt"
    " && git add seen.txt && git commit -qm 'derived: what the agent saw'"
    ' && printf \'%s\' \'{"state": "done", "summary": "committed"}\' > "$HARNESS_STATUS_FILE"'
)


def _docker(*args: str, engine: list[str] | None = None, check: bool = True) -> str:
    return subprocess.run([*(engine or ["docker"]), *args], capture_output=True, text=True, check=check,
                          timeout=BUILD_TIMEOUT).stdout.strip()  # fmt: skip


def _labels(image: str) -> dict[str, str]:
    return dict(json.loads(_docker("image", "inspect", "-f", "{{json .Config.Labels}}", image)) or {})


@pytest.fixture(scope="module")
def plain_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """debian:bookworm-slim with git and no python3, marked so the agent can tell it is in it. At the end,
    what derives from it goes too: the derived tags (here and in the lab's engine) and the untagged images
    that carry this run's test label (a derived image inherits the label from its base)."""
    tag = f"harness-test-k8s-plain:{uuid.uuid4().hex[:8]}"
    context = tmp_path_factory.mktemp("k8s-plain")
    (context / "Dockerfile").write_text(f"FROM debian:bookworm-slim\nRUN echo {tag} > /etc/base\n{OFFLINE_GIT}")
    _docker("build", "-q", "--network", "none", "--label", TEST_LABEL, "-t", tag, str(context))
    derived = derived_tag(tag, "custom")
    yield tag
    _docker("rmi", "-f", derived, engine=LAB_DOCKER, check=False)
    _docker("rmi", "-f", derived, tag, check=False)
    for _ in range(4):  # children before parents: a parent goes on a later pass
        listed = _docker("images", "-a", "--filter", f"label={TEST_LABEL}", "--format", "{{.ID}} {{.Repository}}")
        untagged = sorted({line.split()[0] for line in listed.splitlines() if line.endswith(" <none>")})
        if not untagged:
            break
        _docker("rmi", "-f", *untagged, check=False)


def test_an_ordinary_image_is_refused_on_kubernetes_naming_how_to_derive_it(
    repo: GitRepo, k8s_config: KubernetesConfig, plain_image: str
) -> None:
    derived = derived_tag(plain_image, "custom")
    before = _docker("images", "-q", derived)
    r = harness(*run_args("kplain", "--image", plain_image, *k8s(k8s_config), cmd=AGENT, iterations=1, as_json=False),
                cwd=repo.path, timeout=120)  # fmt: skip
    assert r.code == 4, r.stderr  # IMAGE_MISSING
    errors = [line for line in r.stderr.splitlines() if line.startswith("harness: error:")]
    assert len(errors) == 1, r.stderr
    assert f"--image {plain_image} is not built on a harness image" in errors[0]
    assert f"'harness images build base --from {plain_image} -q'" in errors[0]
    # Refused while planning: no session, no Job, nothing built.
    assert not repo.journal("kplain").exists()
    assert cluster_jobs(k8s_config, "kplain") == ([], [])
    assert _docker("images", "-q", derived) == before
    # So does --dry-run, which shows what a run would do.
    dry = harness(*run_args("kplain", "--image", plain_image, "--dry-run", *k8s(k8s_config), cmd=AGENT), cwd=repo.path,
                  timeout=120)  # fmt: skip
    assert dry.code == 4 and "harness images build base --from" in dry.stderr, dry.stderr


def test_a_derived_image_loaded_into_the_node_runs_a_session_on_kubernetes(
    repo: GitRepo, k8s_config: KubernetesConfig, plain_image: str
) -> None:
    built = harness("images", "build", "base", "--from", plain_image, "-q", cwd=repo.path, timeout=BUILD_TIMEOUT)
    assert built.code == 0, built.stderr
    tag = built.stdout.strip()
    assert built.stdout == tag + "\n" and tag == derived_tag(plain_image, "custom")  # only the tag, for scripts
    labels = _labels(tag)
    assert labels[LABEL_DERIVED_FROM] == plain_image and labels[LABEL_DERIVED_AGENT] == "custom"
    assert labels[LABEL_BASE_ID] == _docker("image", "inspect", "-f", "{{.Id}}", plain_image)

    # How a derived tag reaches this cluster: the lab's loader (harness-base too: the helpers' image).
    load = subprocess.run([*LAB, "load", images.DEFAULT_IMAGE, tag], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
    assert load.returncode == 0, load.stderr
    assert _docker("image", "inspect", "-f", "{{.Id}}", tag, engine=LAB_DOCKER) == _docker(
        "image", "inspect", "-f", "{{.Id}}", tag
    )

    r = harness(*run_args("kderived", "--image", tag, *k8s(k8s_config), cmd=AGENT, objective="Record what you see",
                          iterations=2), cwd=repo.path, timeout=600)  # fmt: skip
    assert r.code == 0, r.stderr
    st = r.json()
    assert (st["status"], st["iterationCount"], st["commitsAhead"]) == ("completed", 1, 1), r.stderr
    summary = json.loads((repo.journal("kderived") / "run-summary.json").read_text())
    assert summary["image"] == tag and summary["backend"]["type"] == "kubernetes"
    # The agent's commit came back on the branch, made in the derived image: the base's own file, the agent's
    # uid, no python3 (the relay in the pod's sync container is the static one), git.
    assert repo.git("log", "--format=%s", "main..harness/kderived").splitlines() == ["derived: what the agent saw"]
    seen = repo.git("show", "harness/kderived:seen.txt").splitlines()
    assert seen == [plain_image, "10001", "no-python3", "git version"], seen
    assert cluster_jobs(k8s_config, "kderived") == ([], [])
