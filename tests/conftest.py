"""Shared fixtures: every test's harness state lives in a temp dir; Docker tests are marked.

Under CI (CI=true) a missing Docker engine fails the Docker tests instead of skipping them.

The suite runs in parallel (pytest-xdist, `make test`): each worker is its own process that imports this
module, so its label (its containers, images and k8s namespace) and its temp dirs (every test's HARNESS_HOME)
are its own, and one worker's reaping or "no container left" never sees another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import GitRepo, make_repo, wait_for

if TYPE_CHECKING:
    from runner.backends.kubernetes.config import KubernetesConfig

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, ... under xdist
TEST_RUN_LABEL = f"harness-test-{WORKER}-{uuid.uuid4().hex[:8]}"


def _engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# The k8s lab's kubeconfig (scripts/k8s-lab.sh); another cluster's with HARNESS_TEST_KUBECONFIG.
LAB_KUBECONFIG = Path(os.environ.get("HARNESS_TEST_KUBECONFIG", "/var/lib/harness-k8s/kubeconfig"))


def _lab_api() -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(LAB_KUBECONFIG)))


def _cluster_available() -> bool:
    if not LAB_KUBECONFIG.is_file():
        return False
    try:
        nodes = _lab_api().list_node(_request_timeout=10).items
    except Exception:  # unreachable, refused, bad credentials: no lab
        return False
    return any(c.type == "Ready" and c.status == "True" for n in nodes for c in n.status.conditions or [])


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The k8s lab's one node (2 CPUs) holds one agent pod at a time: its tests run one after another, on one
    # worker (`--dist loadgroup`), in one namespace.
    for item in items:
        if item.get_closest_marker("kubernetes"):
            item.add_marker(pytest.mark.xdist_group("kubernetes"))
    _record_groups(config, items)
    _skip_without("kubernetes", _cluster_available, "no k8s lab (run 'make k8s-lab')", items)
    _skip_without("docker", _engine_available, "no Docker engine (run 'make docker')", items)


# pytest-xdist's `--dist loadgroup` passes a test's xdist_group to the scheduler by renaming its node id, which
# pytest 9.2 no longer takes (pytest-xdist#1386, open): the groups are silently ignored. Until it is fixed, each
# worker writes its tests' groups into the run's temp root, and the scheduler below reads them from there.
GROUPS_FILE = "xdist-groups-{}.json"


def _record_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker (a pytest that a worker started inherits its env)
        return
    groups = {}
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in marks}
        if names:
            groups[item.nodeid] = "_".join(sorted(names))
    root = Path(config.option.basetemp).parent  # the worker's basetemp is the run's root / popen-gwN
    (root / GROUPS_FILE.format(WORKER)).write_text(json.dumps(groups))


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: none without it (`-p no:xdist`)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the groups the workers wrote (called once all have collected)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    root = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]  # as xdist itself finds it

    class MarkedGroups(LoadGroupScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first asked once every worker has collected, so every file is there
                self.groups = {}
                for path in root.glob(GROUPS_FILE.format("*")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid) or str(super()._split_scope(nodeid))

    return MarkedGroups(config, log)


def _skip_without(marker: str, available: Callable[[], bool], why: str, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker(marker) for item in items):
        return
    if available():
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        return  # the tests run and fail loudly: CI must have them
    skip = pytest.mark.skip(reason=f"{why}; CI=true turns this into a failure")
    for item in items:
        if item.get_closest_marker(marker):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def harness_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point all harness state at a temp dir, and label every container this test creates."""
    home = tmp_path_factory.mktemp("harness-home")
    monkeypatch.setenv("HARNESS_HOME", str(home))
    monkeypatch.setenv("HARNESS_CONTAINER_LABELS", f"io.solo-harness.test={TEST_RUN_LABEL}")
    monkeypatch.delenv("HARNESS_JOURNAL_ROOT", raising=False)
    # `run`'s defaults come from the environment and the user's config file: neither is the developer's here.
    from runner.backends import engine_tables
    from runner.record.settings import RunOptions, env_var

    for name in RunOptions.model_fields:
        monkeypatch.delenv(env_var(name), raising=False)
    for engine in engine_tables():  # the engines' options: their tables' keys and their flat options
        for name in [*engine.flat, *(f"{engine.name}.{key}" for key in engine.options())]:
            monkeypatch.delenv(env_var(name), raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    return home


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session", autouse=True)
def _reap_test_containers() -> Iterator[None]:
    """The containers (and overlay volumes) of this test run, whatever a failed test left."""
    yield
    try:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
    except FileNotFoundError:
        return  # no docker CLI on this machine: no container can have been made
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip  # the overlays of racers' copies that no test discarded
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)


@pytest.fixture(scope="session")
def k8s_namespace() -> Iterator[str]:
    """A namespace of this test run in the k8s lab, deleted (with every Job and pod in it) at the end."""
    from kubernetes import client

    namespace = TEST_RUN_LABEL
    api = _lab_api()
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    # The lab's controller makes the namespace's default service account a moment later; pods need it.
    wait_for(lambda: api.list_namespaced_service_account(namespace).items, timeout=60, what="a service account")
    yield namespace
    api.delete_namespace(namespace, propagation_policy="Background")


@pytest.fixture
def k8s_config(k8s_namespace: str) -> KubernetesConfig:
    from runner.backends.kubernetes.config import KubernetesConfig

    # Never: the lab's engine must not look for a registry (these machines reach only loopback).
    return KubernetesConfig(
        kubeconfig=str(LAB_KUBECONFIG), namespace=k8s_namespace, pending_timeout=15, image_pull_policy="Never"
    )
