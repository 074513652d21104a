"""Protected paths (`--protect`, docs/security.md row 22) on the Kubernetes backend, on the k8s lab.

The check's view (runner/loop/protect.py) is made by a helper like any other: on Kubernetes a Job whose mounts
travel into its pod and, when writable, back. These runs game the check as the attack suite does on Docker
(tests/security/test_protected_paths.py, whose project and tricks they share: `add` subtracts, its test says
so, pytest is unpacked into the repository), with the session on the cluster: a protected test rewritten to
pass, a conftest.py that skips everything added under the protected directory. The check still fails, the
iteration's check result lists the changed protected paths, and `diff` and `status` flag them. The positive
control is each trick with protection on another path only: the check passes, so the trick is one that works.
An honest fix passes with protection on; an agent that makes the view fail gets a failed check, never the copy
as it left it.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from runner.backends.kubernetes.config import KubernetesConfig
from runner.loop.copy_scripts import VIEW_DIR
from runner.loop.workspace import Workspace
from runner.record.gitops import HostGit
from tests.helpers import GitRepo, Result, harness, run_args
from tests.integration.test_check_view import AGENT, CACHE_ONLY, PATTERNS, UNTOUCHED, _workspace
from tests.integration.test_kubernetes import cluster_jobs, k8s
from tests.security.test_protected_paths import CHECK, DEEP, DONE, FIX, project

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]

__all__ = ["project"]  # the attack suite's fixture, used here

TRICKS = {
    "rewrite": "printf 'def test_add():\\n    assert True\\n' > tests/test_add.py\n",
    "conftest": (
        "printf 'import pytest\\n\\ndef pytest_collection_modifyitems(config, items):\\n"
        '    for item in items:\\n        item.add_marker(pytest.mark.skip(reason="later"))\\n\' > tests/conftest.py\n'
    ),
}
WRITTEN = {"rewrite": "assert True", "conftest": "pytest_collection_modifyitems"}  # what the branch then holds
CHANGED = {
    "rewrite": [{"path": "tests/test_add.py", "change": "modified"}],
    "conftest": [{"path": "tests/conftest.py", "change": "added"}],
}


def game(repo: GitRepo, config: KubernetesConfig, session: str, script: str, *protect: str) -> dict[str, Any]:
    """One iteration of `script` on the cluster, which reports done, with the check and `protect`; the check's
    result."""
    args = run_args(session, *k8s(config), "--check", CHECK, *protect, "--iteration-timeout", "5m",
                    cmd=f"set -eu\n{script}{DONE}", objective="attack", iterations=1)  # fmt: skip
    r = harness(*args, cwd=repo.path, timeout=900)
    assert r.code in {0, 21}, r.stderr  # completed, or out of iterations after a failed check
    record = iteration(repo, session)
    assert isinstance(record["check"], dict), record
    return record


def iteration(repo: GitRepo, session: str, n: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo.journal(session) / f"iteration-{n:04d}.json").read_text())
    return data


def log_of(repo: GitRepo, session: str, record: dict[str, Any]) -> str:
    return (repo.journal(session) / str(record["check"]["logFile"])).read_text(errors="replace")


def cli(repo: GitRepo, *args: str) -> Result:
    return harness(*args, cwd=repo.path, timeout=120)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_a_gamed_check_fails_on_kubernetes_and_the_changed_protected_paths_are_flagged(
    project: GitRepo, k8s_config: KubernetesConfig, trick: str
) -> None:
    record = game(project, k8s_config, "kgamed", TRICKS[trick], "--protect", "tests")
    check = record["check"]
    assert check["passed"] is False, log_of(project, "kgamed", record)
    # The base's tests ran: test_add failed (`add` still subtracts), test_sub passed.
    assert "1 failed, 1 passed" in log_of(project, "kgamed", record), log_of(project, "kgamed", record)
    assert record["outcome"] == "check-failed"
    assert check["protected"] == ["tests"] and check["protectedChanges"] == CHANGED[trick]
    summary = json.loads((project.journal("kgamed") / "run-summary.json").read_text())
    assert (summary["protectedPaths"], summary["protectSource"]) == (["tests"], "flag")
    assert summary["backend"]["type"] == "kubernetes"
    # The agent's change reached its branch, and the review flags it first, for being protected.
    path = CHANGED[trick][0]["path"]
    assert WRITTEN[trick] in project.git("show", f"harness/kgamed:{path}")
    d = cli(project, "diff", "--session", "kgamed", "--json")
    assert d.code == 0, d.stderr
    assert d.json()["flagged"][0] == path and d.json()["reasons"][path] == ["protected"]
    st = cli(project, "status", "--session", "kgamed", "--json")
    assert st.code == 21, st.stderr  # out of iterations with a failed check: needs attention
    assert st.json()["flagged"][0] == path, st.json()
    assert cluster_jobs(k8s_config, "kgamed") == ([], [])  # the view's helpers and the check's Job are gone too


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_the_same_trick_passes_on_kubernetes_when_the_gamed_path_is_not_protected(
    project: GitRepo, k8s_config: KubernetesConfig, trick: str
) -> None:
    """The positive control: protection on, but on pyproject.toml only, and the trick games the check."""
    record = game(project, k8s_config, "kopen", TRICKS[trick], "--protect", "pyproject.toml")
    check = record["check"]
    assert check["passed"] is True, log_of(project, "kopen", record)
    assert check["protected"] == ["pyproject.toml"] and check["protectedChanges"] == []
    assert record["outcome"] == "done"


def test_an_honest_fix_passes_on_kubernetes_with_protected_paths(
    project: GitRepo, k8s_config: KubernetesConfig
) -> None:
    record = game(project, k8s_config, "kfixed", FIX, "--protect", "tests")
    check = record["check"]
    assert check["passed"] is True, log_of(project, "kfixed", record)
    assert "2 passed" in log_of(project, "kfixed", record)
    assert check["protected"] == ["tests"] and check["protectedChanges"] == []
    assert record["outcome"] == "done"


def test_a_view_the_agent_makes_fail_fails_the_check_on_kubernetes(
    project: GitRepo, k8s_config: KubernetesConfig
) -> None:
    """Fails closed: the view cannot be made (directories deeper than a view is made for), so the check does not
    run and fails, with a line in the journal that says why. The control: the same copy, unprotected, passes."""
    record = game(project, k8s_config, "kdeep", FIX + DEEP, "--protect", "tests")
    check = record["check"]
    assert check["passed"] is False and check["exitCode"] is None, check
    assert str(check["outputTail"]).startswith("the check did not run: making the check's view"), check
    assert "directories more than 512 deep" in str(check["outputTail"]), check
    assert log_of(project, "kdeep", record).startswith("the check did not run: making the check's view")
    assert record["outcome"] == "check-failed"
    record = game(project, k8s_config, "kdeep-open", FIX + DEEP, "--no-protect")
    assert record["check"]["passed"] is True, log_of(project, "kdeep-open", record)


def test_the_model_gateway_outlives_the_views_of_a_session_on_kubernetes(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    """The view's helper writes in the run directory, where the model gateway's socket lives: the gateway must
    still answer the next iteration's agent after a check ran on a view. Each iteration asks the model once and
    rewrites a protected file, so each check runs on a view (with the base's file: it fails) and a second
    iteration follows the first."""
    from tests.integration.test_gateway_run import AGENT, REAL_KEY
    from tests.upstreams import Reply, ScriptedUpstream

    (repo.path / "agent.py").write_text(AGENT)
    (repo.path / "tests").mkdir()
    (repo.path / "tests/expected.txt").write_text("base\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "agent and a protected file")
    agent = "python3 agent.py && echo agent > tests/expected.txt"
    with ScriptedUpstream(anthropic=[Reply(text="first"), Reply(text="second")]) as up:
        r = harness(*run_args("kgwview", *k8s(k8s_config), "--check", "grep -qx agent tests/expected.txt",
                              "--protect", "tests", cmd=agent, iterations=2), cwd=repo.path, timeout=900,
                    env={"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": REAL_KEY})  # fmt: skip
        calls = up.seen("/v1/messages")
    assert r.code == 21, r.stderr  # out of iterations: each check failed on the base's file
    for n in (1, 2):
        record = iteration(repo, "kgwview", n)
        log = (repo.journal("kgwview") / f"iteration-{n:04d}.log").read_text(errors="replace")
        assert "model call 0:" in log, (n, log, record)
        assert record["outcome"] == "check-failed", (n, record)
        assert record["check"]["protectedChanges"] == [{"path": "tests/expected.txt", "change": "modified"}]
    assert len(calls) == 2
    assert "second" in repo.git("show", "harness/kgwview:answer.txt")


# The view itself, made by its helper in a pod from a copy as tests/integration/test_check_view.py's agent leaves
# it, and read on this machine, where the view's writable mount came back.


@pytest.fixture
def k8s_workspace(repo: GitRepo, k8s_config: KubernetesConfig) -> Iterator[Workspace]:
    from runner.backends.kubernetes.engine import KubernetesBackend

    with _workspace(repo, "clone", AGENT, KubernetesBackend(k8s_config)) as ws:
        yield ws


@pytest.fixture
def gateway_socket(k8s_workspace: Workspace) -> Iterator[str]:
    """A Unix socket listening in the run directory, where the model gateway's is (RunDir.net)."""
    net = k8s_workspace.dir.net
    net.mkdir(mode=0o755)
    path = str(net / "gateway.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        yield path


def test_the_view_made_in_a_pod_has_the_bases_protected_files_and_the_agents_others(
    repo: GitRepo, k8s_workspace: Workspace, gateway_socket: str
) -> None:
    ws = k8s_workspace
    copy = ws.dir.workspace
    with (
        HostGit(repo.path) as git,
        ws.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view,
    ):
        v = view.path
        assert v.parent == ws.dir.root / VIEW_DIR
        assert (v / "tests/test_a.py").read_text() == "def test_a():\n    assert 0\n"
        assert (v / "tests/unit/test_b.py").read_text() == "def test_b():\n    assert 0\n"
        assert sorted(os.listdir(v / "tests")) == ["test_a.py", "unit"]
        assert (v / "pyproject.toml").read_text() == "[tool.pytest.ini_options]\naddopts = '-q'\n"
        assert not (v / "pkg").is_symlink() and sorted(os.listdir(v / "pkg")) == ["conftest.py"]
        assert (v / "pkg/conftest.py").read_text() == "BASE\n"
        assert not (v / "elsewhere/conftest.py").exists()
        assert (v / "app.py").read_text() == 'print("fixed")\n'
        assert (v / "elsewhere/mod.py").read_text() == "agent mod\n" and (v / "closed/f").read_text() == "kept\n"
        assert stat.S_ISDIR(os.lstat(v / ".git").st_mode)
        # What else the run directory holds stayed as it was while the view's mount went to the pod and back.
        assert stat.S_ISSOCK(os.lstat(gateway_socket).st_mode)
    # As on Docker, less the FIFO, which no copy brings back from a pod (runner/backends/kubernetes/transfer.py).
    assert {(c.path, c.change) for c in view.changes} == {
        ("tests/test_a.py", "deleted"),
        ("tests/debug.log", "added"),
        ("tests/new\nline.py", "added"),
        ("pyproject.toml", "modified"),
        ("pkg/conftest.py", "deleted"),
        ("elsewhere/conftest.py", "added"),
    }
    assert view.more == 0
    assert not (ws.dir.root / VIEW_DIR).exists()  # removed after the check
    assert (copy / "pkg").is_symlink() and not (copy / "tests/test_a.py").exists()  # the copy as the agent left it
    assert (copy / "app.py").read_text() == 'print("fixed")\n'
    assert stat.S_ISSOCK(os.lstat(gateway_socket).st_mode)


@pytest.mark.parametrize(("agent", "same"), [(UNTOUCHED, True), (CACHE_ONLY, False)], ids=["untouched", "cache"])
def test_no_view_is_made_in_a_pod_when_the_protected_paths_are_the_bases(
    repo: GitRepo, k8s_config: KubernetesConfig, agent: str, same: bool
) -> None:
    """The check runs on the copy itself when the view would be the copy; the control: a cache in a protected
    directory (no change to report) makes a view."""
    from runner.backends.kubernetes.engine import KubernetesBackend

    with (
        _workspace(repo, "clone", agent, KubernetesBackend(k8s_config)) as ws,
        HostGit(repo.path) as git,
        ws.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view,
    ):
        assert view.changes == []
        assert (view.path == ws.dir.workspace) is same
        assert (view.path / "app.py").read_text() == 'print("fixed")\n'
        assert sorted(os.listdir(view.path / "tests")) == ["test_a.py", "unit"]
        assert ("__pycache__" in os.listdir(ws.dir.workspace / "tests")) is not same  # the copy's own cache
    assert not (ws.dir.root / VIEW_DIR).exists()
