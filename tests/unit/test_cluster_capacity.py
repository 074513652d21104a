"""The default cap of a Kubernetes session: what the cluster's schedulable nodes hold of its pod, summed whole
per node (runner/backends/kubernetes/capacity.py); the documented default when the nodes cannot be listed,
against a stand-in API server that refuses; and the supervisor asks its engine once per drive, never at each
look at the queue (runner/usecases/sessions.py `_take_slot`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from runner.backends.base import ContainerSpec, Posture, SessionCapacity
from runner.backends.fake import FakeCluster
from runner.backends.kubernetes.capacity import (
    FALLBACK_SESSIONS,
    PodShape,
    cluster_capacity,
    pod_shape,
    pods_on,
    tolerates,
    unschedulable,
)
from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.engine import KubernetesBackend
from runner.backends.kubernetes.job import job_manifest
from runner.record.journal import Journal
from runner.record.models import AgentInfo, EngineRef, Limits, RunSummary, WorktreeInfo
from runner.usecases import queue as queue_usecase
from runner.usecases.sessions import _take_slot
from tests.kube_standin import StandIn, serving
from tests.unit.test_queue import REPO, held_elsewhere

GI = 1024**3
MI = 1024**2


def node(
    name: str, cpu: str, memory: str, *, cordoned: bool = False, taints: tuple[tuple[str, str, str], ...] = (),
    labels: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    """A node as the API lists it: allocatable cpu and memory, `taints` as (key, value, effect)."""
    return k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels or {"kubernetes.io/hostname": name}),
        spec=k8s.V1NodeSpec(
            unschedulable=cordoned or None,
            taints=[k8s.V1Taint(key=k, value=v or None, effect=e) for k, v, e in taints] or None,
        ),
        status=k8s.V1NodeStatus(allocatable={"cpu": cpu, "memory": memory, "pods": "110"}),
    )


def shape(cpu: str, memory: str, *, tolerations: tuple[Any, ...] = (), selector: dict[str, str] | None = None) -> Any:
    return PodShape(
        cpu=Decimal(cpu), memory=Decimal(memory), node_selector=selector or {}, tolerations=tolerations
    )  # fmt: skip


ONE = shape("1", str(2 * GI))  # a pod of 1 cpu and 2 GiB


def test_a_node_holds_whole_pods_by_its_scarcer_resource_with_quantities_as_the_api_writes_them() -> None:
    assert pods_on(node("a", "3500m", "7Gi"), ONE) == 3  # 3.5 cpus: 3; 7 GiB: 3
    assert pods_on(node("b", "8", "7Gi"), ONE) == 3  # memory is scarcer
    assert pods_on(node("c", "1999m", "64Gi"), ONE) == 1  # cpu is scarcer: 1.999 holds one
    assert pods_on(node("d", "4", "2097151Ki"), ONE) == 0  # 1 KiB short of 2 GiB: none
    assert pods_on(node("e", "4", "8Gi"), shape("0.6", str(768 * MI))) == 6  # 4 // 0.6 = 6, 8 GiB // 768 MiB = 10
    assert pods_on(node("f", "4", "8G"), ONE) == 3  # decimal G: 8e9 bytes


def test_the_cluster_sums_whole_pods_per_node_not_its_total() -> None:
    # Three nodes of 1.5 cpus: 4.5 cpus in all would hold 4 pods of 1 cpu, but each node holds only 1.
    nodes = [node(n, "1500m", "16Gi") for n in ("a", "b", "c")]
    found, left_out = cluster_capacity(nodes, ONE)
    assert found.sessions == 3 and not found.fallback and left_out == []
    assert found.basis == "the cluster's schedulable nodes (3 of 3): 3 pods of 1 cpus and 2 GiB each"


def test_cordoned_and_tainted_nodes_do_not_count_unless_the_pods_tolerate_the_taint() -> None:
    nodes = [
        node("ok", "4", "16Gi"),
        node("cordoned", "4", "16Gi", cordoned=True),
        node("gpu", "4", "16Gi", taints=(("gpu", "true", "NoSchedule"),)),
        node("draining", "4", "16Gi", taints=(("node.kubernetes.io/unreachable", "", "NoExecute"),)),
        node("preferred", "4", "16Gi", taints=(("spot", "true", "PreferNoSchedule"),)),  # only steers: counts
    ]
    found, left_out = cluster_capacity(nodes, ONE)
    assert found.sessions == 4 + 4  # ok and preferred
    assert sorted(left_out) == [
        "cordoned: cordoned", "draining: taint node.kubernetes.io/unreachable:NoExecute",
        "gpu: taint gpu=true:NoSchedule",
    ]  # fmt: skip
    # Pods that tolerate the gpu taint count that node too (the Job's tolerations, should it ever carry one).
    tolerant = shape("1", str(2 * GI), tolerations=(k8s.V1Toleration(key="gpu", operator="Equal", value="true"),))
    assert cluster_capacity(nodes, tolerant)[0].sessions == 12
    assert unschedulable(nodes[1], tolerant) == "cordoned"  # a toleration never undoes a cordon


def test_toleration_matching_follows_kubernetes() -> None:
    taint = k8s.V1Taint(key="gpu", value="true", effect="NoSchedule")
    assert tolerates([k8s.V1Toleration(key="gpu", operator="Exists")], taint)
    assert tolerates([k8s.V1Toleration(operator="Exists")], taint)  # no key: every taint
    assert tolerates([k8s.V1Toleration(key="gpu", value="true", effect="NoSchedule")], taint)  # Equal by default
    assert not tolerates([k8s.V1Toleration(key="gpu", value="false")], taint)
    assert not tolerates([k8s.V1Toleration(key="gpu", operator="Exists", effect="NoExecute")], taint)
    assert not tolerates([k8s.V1Toleration(key="tpu", operator="Exists")], taint)
    assert not tolerates([], taint)


def test_a_node_selector_leaves_out_nodes_without_its_labels() -> None:
    nodes = [node("a", "4", "16Gi", labels={"pool": "agents"}), node("b", "4", "16Gi", labels={"pool": "web"})]
    found, left_out = cluster_capacity(nodes, shape("1", str(2 * GI), selector={"pool": "agents"}))
    assert found.sessions == 4 and left_out == ["b: its labels do not match the node selector"]


def test_at_least_one_when_no_node_can_take_a_pod() -> None:
    nodes = [node("small", "500m", "1Gi"), node("off", "64", "256Gi", cordoned=True)]
    assert cluster_capacity(nodes, ONE)[0].sessions == 1
    assert cluster_capacity([], ONE)[0].sessions == 1


def test_the_pod_asks_what_the_submitted_job_requests_the_sync_container_included() -> None:
    posture = Posture(uid=10001, gid=10001)
    spec = ContainerSpec(image="i", command=["true"], posture=posture, workdir="/", cpus=1.5, memory_bytes=GI, pids=1)
    job = job_manifest(spec, "j", namespace="ns", config=KubernetesConfig(), transfer_allowance=0)
    pod = pod_shape(job)
    assert pod.cpu == Decimal("1.6") and pod.memory == GI + 256 * MI  # main's, and sync's 100m and 256Mi
    assert pod.node_selector == {} and pod.tolerations == ()  # the harness's Jobs carry neither today


# -- the engine against a stand-in API server ---------------------------------------------------------------


NODES = {
    "kind": "NodeList", "apiVersion": "v1", "metadata": {},
    "items": [
        {"metadata": {"name": "n1"}, "spec": {}, "status": {"allocatable": {"cpu": "3500m", "memory": "7Gi"}}},
        {"metadata": {"name": "n2"}, "spec": {"unschedulable": True},
         "status": {"allocatable": {"cpu": "64", "memory": "256Gi"}}},
        {"metadata": {"name": "n3"}, "spec": {"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]},
         "status": {"allocatable": {"cpu": "64", "memory": "256Gi"}}},
        {"metadata": {"name": "n4"}, "spec": {}, "status": {"allocatable": {"cpu": "2", "memory": "16Gi"}}},
    ],
}  # fmt: skip
FORBIDDEN = {
    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
    "message": 'nodes is forbidden: User "you" cannot list resource "nodes" in API group "" at the cluster scope',
}  # fmt: skip


class Nodes(StandIn):
    """Lists NODES, or refuses as a namespaced user is refused (`forbid`)."""

    forbid = False

    def answer(self, path: str) -> tuple[object, int]:
        return (FORBIDDEN, 403) if self.forbid else (NODES, 200)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Nodes, KubernetesConfig]]:
    with serving(Nodes(), tmp_path) as served:
        yield served


def test_the_engine_counts_the_listed_schedulable_nodes_once(api: tuple[Nodes, KubernetesConfig]) -> None:
    server, config = api
    found = KubernetesBackend(config).capacity(cpus=0.9, memory_bytes=GI + 768 * MI)  # a pod: 1 cpu, 2 GiB
    assert (found.sessions, found.fallback) == (3 + 2, False)  # n1: 3, n4: 2; n2 cordoned, n3 tainted
    assert found.basis == "the cluster's schedulable nodes (2 of 4): 5 pods of 1 cpus and 2 GiB each"
    assert server.paths == ["/api/v1/nodes"]


def test_a_user_who_may_not_list_nodes_gets_the_documented_default_and_is_told(
    api: tuple[Nodes, KubernetesConfig], caplog: pytest.LogCaptureFixture
) -> None:
    server, config = api
    server.forbid = True
    with caplog.at_level(logging.WARNING, logger="runner.backends.kubernetes.engine"):
        found = KubernetesBackend(config).capacity(cpus=1, memory_bytes=GI)
    assert (found.sessions, found.fallback) == (FALLBACK_SESSIONS, True)
    assert "cannot be listed" in found.basis and "403" in found.basis, found.basis
    assert [r.getMessage() for r in caplog.records] == [f"{found.basis}; give --slots N for another cap"]
    assert server.paths == ["/api/v1/nodes"]  # a refusal is not retried


def test_an_unreachable_cluster_also_falls_back_and_never_raises(tmp_path: Path) -> None:
    config = KubernetesConfig(kubeconfig=str(tmp_path / "no-such-kubeconfig"))
    found = KubernetesBackend(config).capacity(cpus=1, memory_bytes=GI)
    assert (found.sessions, found.fallback) == (FALLBACK_SESSIONS, True) and "kubeconfig" in found.basis


# -- the supervisor asks once per drive ----------------------------------------------------------------------


def summary_in(tmp_path: Path, session: str) -> tuple[Journal, RunSummary]:
    journal = Journal(tmp_path / "journals" / session, session)
    journal.dir.mkdir(parents=True)
    summary = RunSummary(
        session_id=session, objective="o", max_iterations=1, repo=str(REPO), run_dir="/x", image="i",
        worktree=WorktreeInfo(base_ref="HEAD", base_commit="a" * 40, path="/x/w", branch=f"harness/{session}"),
        agent=AgentInfo(name="demo", command=["x"]), limits=Limits(cpus=1.0, memory_bytes=GI),
        backend=EngineRef.model_validate({"type": "kubernetes"}),
    )  # fmt: skip
    journal.write_summary(summary)
    return journal, summary


class Looks(threading.Event):
    """A stop event that counts the waits between looks at the queue and is set at the `stop_at`-th."""

    def __init__(self, stop_at: int) -> None:
        super().__init__()
        self.waits, self.stop_at = 0, stop_at

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        if self.waits >= self.stop_at:
            self.set()
        return self.is_set()


def test_a_waiting_session_asks_its_engine_once_and_harness_queue_shows_what_it_found(tmp_path: Path) -> None:
    engine = FakeCluster(holds=SessionCapacity(1, "the fake cluster's one node"))
    journal, summary = summary_in(tmp_path, "w")
    with held_elsewhere(tmp_path, "other"):  # the one slot is taken: w waits
        looks = Looks(stop_at=4)
        assert _take_slot(engine, journal, summary, looks) is None
        assert looks.waits >= 3 and engine.capacity_asked == 1
        kept = journal.read_summary().queue
        assert (kept.default_slots, kept.default_basis) == (1, "the fake cluster's one node")
        # `harness queue` shows the cap it waits under from its journal, asking no engine.
        view = queue_usecase.queue_view()
        assert [(q.session_id, q.slots) for q in view.queued] == [("w", 1)]


def test_a_session_under_the_engines_cap_takes_a_slot_at_once(tmp_path: Path) -> None:
    engine = FakeCluster(holds=SessionCapacity(2, "two"))
    journal, summary = summary_in(tmp_path, "t")
    with held_elsewhere(tmp_path, "other"):
        slot = _take_slot(engine, journal, summary, Looks(stop_at=1))
        assert slot is not None and engine.capacity_asked == 1
        slot.release()
    assert journal.read_summary().queue.default_slots == 2


def test_slots_given_ask_no_engine(tmp_path: Path) -> None:
    engine = FakeCluster(holds=SessionCapacity(1, "one"))
    journal, summary = summary_in(tmp_path, "g")
    summary.queue.slots = 3
    slot = _take_slot(engine, journal, summary, Looks(stop_at=1))
    assert slot is not None and engine.capacity_asked == 0
    slot.release()
