"""The queue's default cap (no --slots) is what the session's engine holds: on the k8s lab, what its nodes'
allocatable CPU and memory hold of a session's pod, computed here from `kubectl get nodes -o json`, which differs
from this machine's cores-and-memory formula at the limits chosen; for a user with only the namespace's Role of
docs/kubernetes.md (no right to list nodes), the documented default, said so; on Docker, still that formula.
Each in the plan (`run --dry-run`) and where the supervisor waits (`run --detach` with every slot of the cap
taken: it queues, the journal, `status` and `harness queue` say under which cap, and nothing is created on the
cluster)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from runner.backends.kubernetes.capacity import FALLBACK_SESSIONS
from runner.backends.kubernetes.config import KubernetesConfig
from runner.record.journal import load_model
from runner.record.models import RunSummary
from tests.helpers import GitRepo, harness, run_args, wait_for
from tests.integration.test_kubernetes import cluster_jobs, k8s
from tests.unit.test_queue import held_elsewhere

CPUS, MEMORY = "0.5", "512m"  # the lab's node: 2 cpus; a pod of 0.6 (0.5 and the sync container's 0.1)
SIDECAR_CPU, SIDECAR_MEMORY = Decimal("0.1"), 256 * 1024**2  # the sync container's requests (docs/kubernetes.md)
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
AGENT = "sleep 600"  # never runs: the session only waits in the queue


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity ("3500m", "24682768Ki", "2"), read here on its own (not with the harness's code)."""
    if text.endswith("m"):
        return Decimal(text[:-1]) / 1000
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    return Decimal(text)


def lab_nodes_hold(kubeconfig: str, cpus: Decimal, memory: int) -> tuple[int, int, int]:
    """What the lab's schedulable nodes hold of a session's pod, summed whole per node, from kubectl's JSON; with
    how many nodes are schedulable and how many there are."""
    nodes = json.loads(subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout)["items"]  # fmt: skip
    pod_cpu, pod_memory = cpus + SIDECAR_CPU, memory + SIDECAR_MEMORY
    held, schedulable = 0, 0
    for node in nodes:
        spec = node.get("spec", {})
        if spec.get("unschedulable") or any(t["effect"] in ("NoSchedule", "NoExecute") for t in spec.get("taints", [])):
            continue
        schedulable += 1
        allocatable = node["status"]["allocatable"]
        held += min(
            math.floor(quantity(allocatable["cpu"]) / pod_cpu), math.floor(quantity(allocatable["memory"]) / pod_memory)
        )  # fmt: skip
    return max(1, held), schedulable, len(nodes)


def this_machine_holds(cpus: Decimal, memory: int) -> int:
    cores = len(os.sched_getaffinity(0))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(math.floor(cores / cpus), total // memory))


@contextlib.contextmanager
def slots_taken(tmp_path: Path, count: int) -> Iterator[None]:
    """`count` slots of the test's harness home held by other processes (killed at the end)."""
    with contextlib.ExitStack() as stack:
        for n in range(count):
            stack.enter_context(held_elsewhere(tmp_path / f"holder-{n}", f"holder{n}"))
        yield


def summary_of(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def waits_under_the_default(repo: GitRepo, tmp_path: Path, session: str, cap: int, *engine: str) -> RunSummary:
    """`run --detach` without --slots while `cap` slots are taken: it must queue (a larger cap would start it);
    then `stop` takes it out of the queue. Its summary as it waited."""
    with slots_taken(tmp_path, cap):
        r = harness(*run_args(session, "--cpus", CPUS, "--memory", MEMORY, "--detach", *engine, cmd=AGENT,
                              iterations=1), cwd=repo.path)  # fmt: skip
        assert r.code == 0, r.stderr
        try:
            waited = summary_of(repo, session)
            assert waited.status.value == "queued", (waited.status, waited.queue)
            st = harness("status", "--session", session, "--json", cwd=repo.path).json()
            assert (st["slots"], st["slotsInForce"]) == (None, cap), st
            text = harness("status", "--session", session, cwd=repo.path).stdout
            assert f"position 1 of 1, waiting for one of {cap} slots" in text, text
            queued = harness("queue", "--json", cwd=repo.path).json()["queued"]
            assert [(q["sessionId"], q["slots"]) for q in queued] == [(session, cap)]
        finally:
            harness("stop", "--session", session, "--now", cwd=repo.path)
            wait_for(lambda: summary_of(repo, session).status.value == "stopped", 60, "the session to leave the queue")
    return waited


@pytest.mark.kubernetes
@pytest.mark.docker
def test_a_kubernetes_sessions_default_cap_is_what_the_labs_nodes_hold(
    repo: GitRepo, tmp_path: Path, k8s_config: KubernetesConfig
) -> None:
    assert k8s_config.kubeconfig is not None
    cpus, memory = Decimal(CPUS), 512 * 1024**2
    expected, schedulable, nodes = lab_nodes_hold(k8s_config.kubeconfig, cpus, memory)
    local = this_machine_holds(cpus, memory)
    assert expected != local, f"pick other limits: the lab's nodes and this machine both hold {local}"
    basis = f"the cluster's schedulable nodes ({schedulable} of {nodes}): {expected} pods of 0.6 cpus and 768 MiB each"

    plan = harness(*run_args("kcap", "--cpus", CPUS, "--memory", MEMORY, "--dry-run", *k8s(k8s_config), cmd=AGENT),
                   cwd=repo.path)  # fmt: skip
    assert plan.code == 0, plan.stderr
    assert (plan.json()["slotsInForce"], plan.json()["slotsBasis"]) == (expected, basis)
    text = harness(*run_args("kcap", "--cpus", CPUS, "--memory", MEMORY, "--dry-run", *k8s(k8s_config), cmd=AGENT,
                             as_json=False), cwd=repo.path, env={"COLUMNS": "300"}).stdout  # fmt: skip
    assert f"sessions at once  {expected} ({basis})" in text, text

    waited = waits_under_the_default(repo, tmp_path, "kcap", expected, *k8s(k8s_config))
    assert (waited.queue.default_slots, waited.queue.default_basis, waited.queue.slots) == (expected, basis, None)
    assert cluster_jobs(k8s_config, "kcap") == ([], [])  # waiting made nothing on the cluster


@contextlib.contextmanager
def namespaced_user(config: KubernetesConfig, tmp_path: Path) -> Iterator[KubernetesConfig]:
    """A service account of the test's namespace with the Role of docs/kubernetes.md (jobs, pods, their logs and
    exec, its namespace: nothing cluster-wide), as a kubeconfig of its own; removed at the end."""
    from kubernetes import client
    from kubernetes import config as loader

    assert config.kubeconfig is not None
    api = loader.new_client_from_config(config_file=config.kubeconfig)
    core, rbac, ns, name = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), config.namespace, "namespaced"
    rules = [
        client.V1PolicyRule(api_groups=["batch"], resources=["jobs"],
                            verbs=["create", "get", "list", "watch", "delete"]),
        client.V1PolicyRule(api_groups=[""], resources=["pods"],
                            verbs=["get", "list", "watch", "delete", "deletecollection"]),
        client.V1PolicyRule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
        client.V1PolicyRule(api_groups=[""], resources=["pods/exec"], verbs=["create", "get"]),
        client.V1PolicyRule(api_groups=[""], resources=["namespaces"], resource_names=[ns], verbs=["get"]),
    ]  # fmt: skip
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    try:
        rbac.create_namespaced_role(ns, client.V1Role(metadata=client.V1ObjectMeta(name=name), rules=rules))
        rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=ns)],
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        ))  # fmt: skip
        wait_for(lambda: core.read_namespaced_service_account(name, ns).secrets, 60, "the account's token")
        secret = core.read_namespaced_service_account(name, ns).secrets[0].name
        token = base64.b64decode(core.read_namespaced_secret(secret, ns).data["token"]).decode()
        admin = yaml.safe_load(Path(config.kubeconfig).read_text())
        cluster = next(c for c in admin["clusters"])
        own = tmp_path / "namespaced-kubeconfig"
        own.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "ns", "clusters": [cluster],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "ns", "context": {"cluster": cluster["name"], "user": name, "namespace": ns}}],
        }))  # fmt: skip
        yield config.model_copy(update={"kubeconfig": str(own)})
    finally:
        for delete in (rbac.delete_namespaced_role_binding, rbac.delete_namespaced_role,
                       core.delete_namespaced_service_account):  # fmt: skip
            with contextlib.suppress(client.exceptions.ApiException):
                delete(name, ns)


@pytest.mark.kubernetes
@pytest.mark.docker
def test_a_user_who_may_not_list_nodes_gets_the_documented_default_and_is_told_so(
    repo: GitRepo, tmp_path: Path, k8s_config: KubernetesConfig
) -> None:
    with namespaced_user(k8s_config, tmp_path) as mine:
        assert mine.kubeconfig is not None
        denied = subprocess.run(["kubectl", "--kubeconfig", mine.kubeconfig, "get", "nodes"], capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        assert denied.returncode != 0 and "forbidden" in denied.stderr, denied  # the Role indeed lists no node
        plan = harness(*run_args("kfall", "--cpus", CPUS, "--memory", MEMORY, "--dry-run", *k8s(mine), cmd=AGENT),
                       cwd=repo.path)  # fmt: skip
        assert plan.code == 0, plan.stderr
        basis = plan.json()["slotsBasis"]
        assert plan.json()["slotsInForce"] == FALLBACK_SESSIONS, basis
        assert (
            basis.startswith(f"a default of {FALLBACK_SESSIONS}: the cluster's nodes cannot be listed")
            and "403" in basis
        )
        assert f"{basis}; give --slots N for another cap" in plan.stderr  # the log says it too

        waited = waits_under_the_default(repo, tmp_path, "kfall", FALLBACK_SESSIONS, *k8s(mine))
        assert waited.queue.default_slots == FALLBACK_SESSIONS and waited.queue.default_basis == basis
    assert cluster_jobs(k8s_config, "kfall") == ([], [])


@pytest.mark.docker
def test_a_docker_sessions_default_cap_is_still_this_machines_cores_and_memory(repo: GitRepo, tmp_path: Path) -> None:
    expected = this_machine_holds(Decimal(CPUS), 512 * 1024**2)
    plan = harness(*run_args("dcap", "--cpus", CPUS, "--memory", MEMORY, "--dry-run", cmd=AGENT), cwd=repo.path)
    assert plan.code == 0, plan.stderr
    assert plan.json()["slotsInForce"] == expected
    assert plan.json()["slotsBasis"].startswith(f"this machine's {len(os.sched_getaffinity(0))} cores")

    waited = waits_under_the_default(repo, tmp_path, "dcap", expected)
    assert waited.queue.default_slots == expected and waited.queue.slots is None
    assert waited.queue.default_basis is not None and waited.queue.default_basis.startswith("this machine's")
