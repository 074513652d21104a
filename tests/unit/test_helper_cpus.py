"""Helpers burst to two cores while the agent is stopped (pack-objects compresses on both: the harvest
benchmark), yet ask a cluster's scheduler for no more than the run's --cpus, so they fit wherever the
agent fits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.backends.base import ContainerSpec
from runner.backends.docker.engine import DockerBackend
from runner.backends.fake import FakeBackend
from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.engine import KubernetesBackend
from runner.loop.workspace import HELPER_CPU_BURST, RunDir, Workspace
from runner.record.models import Limits
from runner.sandbox.container import hardened_spec, labels
from tests.unit.fake_copy import helper_exec, with_helpers

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: there is nothing to burst to")


def test_the_checkpoint_helper_may_burst_beyond_the_runs_cpus(tmp_path: Path) -> None:
    backend = FakeBackend(behaviour=with_helpers(), on_exec=helper_exec)
    run_dir = RunDir(tmp_path / "run")
    for d in (run_dir.workspace, run_dir.outbox, run_dir.export):
        d.mkdir(parents=True)
    workspace = Workspace(backend=backend, run_dir=run_dir, image="harness-base:latest", limits=Limits(cpus=1),
                          session="s", repo_key="k")  # fmt: skip

    class NoGit:
        pass

    workspace.checkpoint_and_harvest(git=NoGit(), iteration=1, base="0" * 40, last="0" * 40, dest_ref="r")  # type: ignore[arg-type]
    helper = backend.runs[0]
    assert (helper.cpus, helper.cpu_burst) == (1, HELPER_CPU_BURST) == (1, 2)
    workspace.close()
    # An agent with the cores already gets no burst.
    wide = Workspace(backend=backend, run_dir=run_dir, image="harness-base:latest", limits=Limits(cpus=2),
                     session="s", repo_key="k")  # fmt: skip
    wide.checkpoint_and_harvest(git=NoGit(), iteration=2, base="0" * 40, last="0" * 40, dest_ref="r")  # type: ignore[arg-type]
    assert (backend.runs[-1].cpus, backend.runs[-1].cpu_burst) == (2, None)
    wide.close()


def _spec() -> ContainerSpec:
    return hardened_spec(image="harness-base:latest", command=["true"], limits=Limits(cpus=1), mounts=(),
                         labels=labels("s", "k", "helper"), cpu_burst=2)  # fmt: skip


def test_docker_caps_a_helper_at_its_burst() -> None:
    assert DockerBackend._create_args(_spec())["nano_cpus"] == 2 * 10**9


def test_kubernetes_requests_the_runs_cpus_and_limits_the_burst(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # never contacted: a submission is only built
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    job = KubernetesBackend(KubernetesConfig(kubeconfig=str(kubeconfig))).submission(_spec())
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]  # type: ignore[index]
    assert resources["requests"]["cpu"] == "1000m" and resources["limits"]["cpu"] == "2000m", resources
