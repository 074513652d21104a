"""The engines' contract (tests/backends/contract.py) run against the fake, Docker and Kubernetes (the k8s lab)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from typing import Any

import pytest

from runner.backends.base import ContainerSpec
from runner.backends.fake import FakeBackend, FakeRun, mount_source
from runner.backends.kubernetes.config import KubernetesConfig
from tests.backends.contract import MIB, EngineContract, RealEngineContract, Subject, shell_subject
from tests.conftest import TEST_RUN_LABEL


def docker_leave(extra: dict[str, str]) -> None:
    label_args = [arg for k, v in extra.items() for arg in ("--label", f"{k}={v}")]
    subprocess.run(
        ["docker", "create", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}", *label_args,
         "--network", "none", "harness-base:latest", "true"],
        check=True, capture_output=True,
    )  # fmt: skip


def docker_posture(submitted: dict[str, Any]) -> bool:
    return (
        submitted["cap_drop"] == ["ALL"]
        and submitted["read_only"] is True
        and submitted["user"] == "10001:10001"
        and submitted["security_opt"] == ["no-new-privileges"]
        and submitted["network_mode"] == "none"
        and submitted["privileged"] is False
    )


def _fake_subject() -> Subject:
    fake = FakeBackend()

    def behaviour(spec: ContainerSpec) -> FakeRun:
        cmd = spec.command
        if cmd[0] == "fake:oom":
            return FakeRun(exit_code=137, oom_killed=True)
        if cmd[0] == "fake:flood":
            return FakeRun(output=b"x" * int(cmd[1]) * MIB)
        if cmd[0] == "fake:fill":
            return FakeRun(hang=True, disk_bytes=int(cmd[2]) * MIB)
        if cmd[0] == "fake:nap":
            return FakeRun(seconds=float(cmd[1]), output=b"sleeping\n")
        if cmd[0] == "fake:pending":
            return FakeRun(pending=True)
        if cmd[0] == "fake:mounts":
            given, kept = mount_source(spec, cmd[1]), mount_source(spec, cmd[2])
            (kept / "copy.txt").write_bytes((given / "in.txt").read_bytes())
            (kept / "sub").mkdir()
            (kept / "sub" / "new.txt").write_text("made inside\n")
            (kept / "old.txt").unlink()
            return FakeRun()
        raise AssertionError(cmd)

    fake.behaviour = behaviour
    return Subject(
        fake,
        lambda text, code: ["fake:echo-exit", text, str(code)],
        lambda seconds: ["fake:nap", str(seconds)],
        ["fake:oom"],
        lambda mib: ["fake:flood", str(mib)],
        lambda path, mib: ["fake:fill", path, str(mib)],
        lambda extra: fake.existing.__setitem__(f"left{len(fake.existing)}", dict(extra)),
        lambda submitted: submitted["user"] == "10001:10001",
        lambda given, kept: ["fake:mounts", given, kept],
        lambda pending: replace(pending, command=["fake:pending"]),
    )


def _k8s_posture(job: dict[str, Any]) -> bool:
    pod = job["spec"]["template"]["spec"]
    hardened = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "privileged": False,
    }  # fmt: skip
    return (
        job["apiVersion"] == "batch/v1"
        and job["spec"]["backoffLimit"] == 0
        and job["spec"]["activeDeadlineSeconds"] > 0
        and pod["restartPolicy"] == "Never"
        and pod["automountServiceAccountToken"] is False
        and pod["securityContext"]
        == {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}
        and all(c["securityContext"] == hardened for c in pod["containers"])
        and all("hostPath" not in v for v in pod["volumes"])
        and pod["containers"][0]["resources"]["limits"] == {"cpu": "1000m", "memory": str(64 * MIB)}
    )  # fmt: skip


def _k8s_subject(config: KubernetesConfig) -> Subject:
    from kubernetes import client

    from runner.backends.kubernetes.engine import KubernetesBackend

    backend = KubernetesBackend(config.model_copy(update={"pending_timeout": 600}))

    def leave(extra: dict[str, str]) -> None:
        job = client.V1Job(
            metadata=client.V1ObjectMeta(name=f"left-{len(backend.list_containers({}))}", labels=extra),
            spec=client.V1JobSpec(
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never", automount_service_account_token=False,
                        containers=[client.V1Container(name="c", image="harness-base:latest", command=["true"],
                                                       image_pull_policy="Never")],
                    )
                )
            ),
        )  # fmt: skip
        client.BatchV1Api(backend.api).create_namespaced_job(config.namespace, job)

    subject = shell_subject(backend, leave, _k8s_posture)
    # More cores than the lab's node has: the pod stays Pending (its pending timeout is past the tests' times).
    subject.pending = lambda pending: replace(pending, cpus=64)
    return subject


class TestFake(EngineContract):
    @pytest.fixture
    def subject(self) -> Subject:
        return _fake_subject()


@pytest.mark.docker
class TestDocker(RealEngineContract):
    @pytest.fixture
    def subject(self) -> Subject:
        from runner.backends.docker.engine import DockerBackend

        return shell_subject(DockerBackend(), docker_leave, docker_posture)


@pytest.mark.kubernetes
class TestKubernetes(RealEngineContract):
    @pytest.fixture
    def subject(self, k8s_config: KubernetesConfig) -> Subject:
        return _k8s_subject(k8s_config)
