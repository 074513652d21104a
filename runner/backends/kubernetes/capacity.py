"""How many sessions a cluster holds at once: the default cap of the machine-wide queue for a Kubernetes session
(`Backend.capacity`; docs/kubernetes.md).

Per node that can take the harness's pods, as many of a session's pods as its allocatable CPU and memory hold,
summed over the nodes: sum(min(allocatable cpu // pod cpu, allocatable memory // pod memory)), at least 1. A
node's total, not what is free now: a pod that does not fit yet waits for its node as any pod does.

- **A node counts** when the pods may be placed on it: not cordoned (`spec.unschedulable`), its labels match
  the pods' node selector, and the pods tolerate each of its taints whose effect is NoSchedule or NoExecute
  (PreferNoSchedule only steers the scheduler). The node selector, the tolerations and the requests are read from
  the Job the engine submits (runner/backends/kubernetes/job.py), so they cannot drift apart; today it carries
  neither a selector nor a toleration.
- **A pod asks** what its containers request: the agent's --cpus and --memory in `main`, and the `sync`
  container's own (100m, 256Mi).
- **When the nodes cannot be listed** (a user with a namespace's rights only, which is common: nodes are
  cluster-scoped), the engine answers `FALLBACK_SESSIONS` and says so; a run never fails over it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from runner.backends.base import SessionCapacity
from runner.base.limits import format_size

FALLBACK_SESSIONS = 4  # the cap of a Kubernetes session whose cluster's nodes cannot be listed (docs/kubernetes.md)
_BLOCKING = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class PodShape:
    """What one session's pod asks of a node, and where it may go."""

    cpu: Decimal  # cores its containers request
    memory: Decimal  # bytes
    node_selector: Mapping[str, str]
    tolerations: tuple[Any, ...]  # the client's V1Toleration


def _quantity(value: object) -> Decimal:
    """A quantity as the API writes it ("3500m", "7Gi", "2"); 0 when absent or unreadable."""
    if value is None:
        return Decimal(0)
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return Decimal(0)


def pod_shape(job: Any) -> PodShape:
    """The pod of `job` (a V1Job as job_manifest makes it): its containers' requests summed, its placement."""
    pod = job.spec.template.spec
    requests = [(c.resources.requests or {}) if c.resources else {} for c in pod.containers]
    return PodShape(
        cpu=sum((_quantity(r.get("cpu")) for r in requests), Decimal(0)),
        memory=sum((_quantity(r.get("memory")) for r in requests), Decimal(0)),
        node_selector=dict(pod.node_selector or {}),
        tolerations=tuple(pod.tolerations or ()),
    )


def tolerates(tolerations: Iterable[Any], taint: Any) -> bool:
    """Whether one of `tolerations` tolerates `taint` (Kubernetes' rule: an empty effect matches every effect;
    `Exists` matches any value of its key, or every key when it has none; `Equal`, the default, key and value)."""
    for t in tolerations:
        if t.effect and t.effect != taint.effect:
            continue
        if (t.operator or "Equal") == "Exists":
            if not t.key or t.key == taint.key:
                return True
        elif t.key == taint.key and (t.value or "") == (taint.value or ""):
            return True
    return False


def unschedulable(node: Any, pod: PodShape) -> str | None:
    """Why the pod cannot be placed on `node`; None when it can (room aside)."""
    spec = node.spec
    if spec is not None and spec.unschedulable:
        return "cordoned"
    labels = (node.metadata.labels if node.metadata is not None else None) or {}
    if any(labels.get(key) != value for key, value in pod.node_selector.items()):
        return "its labels do not match the node selector"
    for taint in (spec.taints or []) if spec is not None else []:
        if taint.effect in _BLOCKING and not tolerates(pod.tolerations, taint):
            value = f"={taint.value}" if taint.value else ""
            return f"taint {taint.key}{value}:{taint.effect}"
    return None


def pods_on(node: Any, pod: PodShape) -> int:
    """How many of the pods the node's allocatable CPU and memory hold (its taints and cordon aside)."""
    allocatable = (node.status.allocatable if node.status is not None else None) or {}
    cpu, memory = _quantity(allocatable.get("cpu")), _quantity(allocatable.get("memory"))
    if pod.cpu <= 0 or pod.memory <= 0:
        return 0
    return max(0, min(math.floor(cpu / pod.cpu), math.floor(memory / pod.memory)))


def cluster_capacity(nodes: Iterable[Any], pod: PodShape) -> tuple[SessionCapacity, list[str]]:
    """The sessions the nodes hold at once (at least 1), and why each node that does not count does not."""
    held, counted, left_out = 0, 0, []
    nodes = list(nodes)
    for node in nodes:
        name = node.metadata.name if node.metadata is not None else "?"
        why = unschedulable(node, pod)
        if why is not None:
            left_out.append(f"{name}: {why}")
            continue
        counted += 1
        held += pods_on(node, pod)
    each = f"{pod.cpu.normalize():f} cpus and {format_size(int(pod.memory))} each"
    basis = f"the cluster's schedulable nodes ({counted} of {len(nodes)}): {held} pods of {each}"
    return SessionCapacity(max(1, held), basis), left_out


def fallback(reason: str) -> SessionCapacity:
    """The documented default when the cluster's nodes cannot be listed."""
    return SessionCapacity(
        FALLBACK_SESSIONS, f"a default of {FALLBACK_SESSIONS}: the cluster's nodes cannot be listed ({reason})",
        fallback=True,
    )  # fmt: skip
