"""The Kubernetes engine's configuration (docs/kubernetes.md): which cluster, namespace and pull policy, and how
long a pod may wait for a node. Imports nothing of the `kubernetes` client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field

from runner.backends.config import EngineConfig, Seconds


class KubernetesConfig(EngineConfig):
    """Each container as a `batch/v1` Job on a Kubernetes cluster (docs/kubernetes.md)."""

    type: Literal["kubernetes"] = Field(default="kubernetes", description="Always `kubernetes`.")
    kubeconfig: str | None = Field(
        default=None, description="The kubeconfig file (--kubeconfig); null: $KUBECONFIG, then ~/.kube/config."
    )
    context: str | None = Field(default=None, description="The kubeconfig context (--kube-context); null: its current.")
    namespace: str = Field(default="default", description="The namespace of the Jobs (--kube-namespace).")
    pending_timeout: Seconds = Field(
        default=300.0,
        gt=0,
        alias="pendingTimeoutSeconds",
        description="How long a pod may wait for a node before its iteration ends `not-started` "
        "(--kube-pending-timeout; a duration in the settings, seconds in the journal).",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        default="IfNotPresent",
        description="The pods' imagePullPolicy (--kube-image-pull-policy): `IfNotPresent`, `Always`, or `Never` "
        "(only images the nodes hold).",
    )

    flat: ClassVar[Mapping[str, str]] = {
        "kubeconfig": "kubeconfig",
        "kube_context": "context",
        "kube_namespace": "namespace",
        "kube_pending_timeout": "pending_timeout",
        "kube_image_pull_policy": "image_pull_policy",
    }
    repository_keys: ClassVar[frozenset[str]] = frozenset({"image_pull_policy"})
