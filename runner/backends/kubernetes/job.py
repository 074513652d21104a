"""The Job one container of the harness becomes, as data: what `start` creates and `run --dry-run` shows.

A Job's pod has two containers sharing emptyDir volumes, one per mount of the spec: `main` runs the command
once `sync` has received the mounts' contents (runner.backends.kubernetes.transfer) and the harness has touched
`ready`; after `main` ends, the writable mounts are collected from `sync` and the harness touches `done`, which
ends `sync`. Both run the spec's image with its posture; `main` has the spec's limits.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kubernetes import client as k8s

from runner.backends.base import ContainerSpec
from runner.backends.kubernetes.config import KubernetesConfig
from runner.base.errors import BackendError

MAIN = "main"
SYNC = "sync"
CONTROL = "/harness-sync"  # the handshake files; read-only in `main`
SYNC_ROOT = "/sync"  # where `sync` sees mount i, as /sync/m<i>

_WAIT_MAIN = f'until [ -e {CONTROL}/ready ]; do sleep 0.2; done; "$@"; exit $?'
# The shell stays pid 1 of `main` and runs the command as its child: `stop` signals every process
# but pid 1 from inside (a pid namespace's init ignores signals it does not handle).
_WAIT_SYNC = f"until [ -e {CONTROL}/done ]; do sleep 0.5; done"


def job_name(spec: ContainerSpec, suffix: str) -> str:
    """`harness-<role>-<suffix>`: a new name for each Job."""
    role = re.sub(r"[^a-z0-9-]", "-", spec.labels.get("io.solo-harness.role", "c").lower()).strip("-")[:20]
    return f"harness-{role or 'c'}-{suffix}"


def _safe_dirs(spec: ContainerSpec) -> dict[str, str]:
    """A volume's top directory is root's (group the agent's), not the agent uid's as on Docker: git
    would refuse a repository there as of dubious ownership. Each writable mount is named safe, in
    the one config scope git honours for it besides system and global: GIT_CONFIG_COUNT (command)."""
    targets = [m.target for m in spec.mounts if not m.read_only]
    env = {"GIT_CONFIG_COUNT": str(len(targets))} if targets else {}
    for i, target in enumerate(targets):
        env |= {f"GIT_CONFIG_KEY_{i}": "safe.directory", f"GIT_CONFIG_VALUE_{i}": target}
    return env


def job_manifest(
    spec: ContainerSpec, name: str, *, namespace: str, config: KubernetesConfig, transfer_allowance: float
) -> Any:
    """The Job that runs `spec` (see the module's docstring); its own deadline is the run's, the pending timeout
    and `transfer_allowance`."""
    if any(m.lower is not None for m in spec.mounts):  # the planner never asks: this engine is not `Overlays`
        raise BackendError("this engine has no overlay mounts: the copy must be a clone of its own")
    posture = spec.posture
    volumes = [k8s.V1Volume(name="control", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Mi"))]
    main_mounts = [k8s.V1VolumeMount(name="control", mount_path=CONTROL, read_only=True)]
    sync_mounts = [k8s.V1VolumeMount(name="control", mount_path=CONTROL)]
    for i, mount in enumerate(spec.mounts):
        volumes.append(k8s.V1Volume(name=f"m{i}", empty_dir=k8s.V1EmptyDirVolumeSource()))
        main_mounts.append(k8s.V1VolumeMount(name=f"m{i}", mount_path=mount.target, read_only=mount.read_only))
        sync_mounts.append(k8s.V1VolumeMount(name=f"m{i}", mount_path=f"{SYNC_ROOT}/m{i}"))
    for i, tmpfs in enumerate(sorted(spec.tmpfs, key=lambda t: t.target)):
        memory = k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=str(tmpfs.size_bytes))
        volumes.append(k8s.V1Volume(name=f"t{i}", empty_dir=memory))
        main_mounts.append(k8s.V1VolumeMount(name=f"t{i}", mount_path=tmpfs.target))
    hardened = k8s.V1SecurityContext(
        allow_privilege_escalation=not posture.no_new_privileges,
        read_only_root_filesystem=posture.read_only_root,
        capabilities=k8s.V1Capabilities(drop=list(posture.drop_capabilities)),
        privileged=False,
    )
    cpu = f"{max(1, round(spec.cpus * 1000))}m"
    cpu_limit = f"{max(1, round(max(spec.cpus, spec.cpu_burst or 0) * 1000))}m"
    main = k8s.V1Container(
        name=MAIN,
        image=spec.image,
        image_pull_policy=config.image_pull_policy,
        command=["sh", "-c", _WAIT_MAIN, "harness-wait", *spec.command],
        working_dir=spec.workdir,
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in sorted({**_safe_dirs(spec), **spec.env}.items())],
        # Requests equal to limits (but a helper's CPU burst): never placed on a node without room.
        resources=k8s.V1ResourceRequirements(
            limits={"cpu": cpu_limit, "memory": str(spec.memory_bytes)},
            requests={"cpu": cpu, "memory": str(spec.memory_bytes)},
        ),
        security_context=hardened,
        volume_mounts=main_mounts,
    )
    sync = k8s.V1Container(
        name=SYNC,
        image=spec.image,
        image_pull_policy=config.image_pull_policy,
        command=["sh", "-c", _WAIT_SYNC],
        working_dir="/",
        resources=k8s.V1ResourceRequirements(
            limits={"cpu": "500m", "memory": "256Mi"}, requests={"cpu": "100m", "memory": "256Mi"}
        ),
        security_context=hardened,
        volume_mounts=sync_mounts,
    )
    pod_labels = dict(spec.labels)
    deadline = (spec.deadline_seconds or 0) + config.pending_timeout + transfer_allowance
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=pod_labels),
        spec=k8s.V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=math.ceil(deadline),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=pod_labels),
                spec=k8s.V1PodSpec(
                    restart_policy="Never",
                    automount_service_account_token=False,
                    enable_service_links=False,
                    dns_policy="Default",  # no cluster DNS is needed: the pod has no network
                    termination_grace_period_seconds=5,  # the harness stops the agent itself, first
                    runtime_class_name=spec.runtime if spec.runtime and spec.runtime != "runc" else None,
                    security_context=k8s.V1PodSecurityContext(
                        run_as_user=posture.uid,
                        run_as_group=posture.gid,
                        fs_group=posture.gid,
                        run_as_non_root=True,
                        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                    ),
                    containers=[main, sync],
                    volumes=volumes,
                ),
            ),
        ),
    )
