"""A pod's start (waiting for a node, its image, its copy) is under the watchdog, on the k8s lab: the iteration
timeout and `harness stop --now` end an iteration whose agent pod stays Pending, long before the pending timeout,
and nothing is harvested after it (the agent never ran; the checkpoint helper would wait for a node too)."""

from __future__ import annotations

import time

import pytest

from runner.backends.kubernetes.config import KubernetesConfig
from tests.helpers import GitRepo, harness, wait_for
from tests.integration.test_kubernetes import cluster_jobs, k8s, record, report

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]


def test_the_timeout_and_stop_now_end_an_iteration_whose_pod_stays_pending(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    # The copy is made and one iteration runs on 1 CPU; the pending timeout is far past what this test waits.
    ok = harness("run", "--objective", "x", "--session", "kpend", "--agent-cmd", report("working", "first"),
                 "--max-iterations", "1", "--json", *k8s(k8s_config, pending="10m"), cwd=repo.path,
                 timeout=600)  # fmt: skip
    assert ok.json()["lastOutcome"] == "working", ok.stderr

    # The lab's one node has 2 CPUs: 64 fit nowhere, so the agent's pod waits for a node.
    began = time.monotonic()
    r = harness("resume", "--session", "kpend", "--cpus", "64", "--iteration-timeout", "10s", "--max-iterations",
                "1", "--json", cwd=repo.path, timeout=600)  # fmt: skip
    took = time.monotonic() - began
    st = r.json()
    assert (st["status"], st["stopReason"], st["lastOutcome"]) == ("stopped", "max-iterations", "timed-out"), r.stderr
    second = record(repo, "kpend", 2)
    assert second.timed_out and second.exit_code is None and second.backend_error is None
    assert second.head_commit is None and second.harvest_error is None  # no checkpoint helper was started
    assert took < 240, took  # the deadline, not the pending timeout of 10 minutes
    assert cluster_jobs(k8s_config, "kpend") == ([], [])

    r = harness("resume", "--session", "kpend", "--iteration-timeout", "30m", "--max-iterations", "3", "--detach",
                "--json", cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    wait_for(lambda: any("agent" in j for j in cluster_jobs(k8s_config, "kpend")[0]), timeout=180,
             what="the agent's Job")  # fmt: skip
    asked = time.monotonic()
    assert harness("stop", "--session", "kpend", "--now", cwd=repo.path).code == 0

    def ended() -> bool:
        return harness("status", "--session", "kpend", "--json", cwd=repo.path).json()["status"] != "running"

    wait_for(ended, timeout=240, what="the run to end")
    assert time.monotonic() - asked < 240
    st = harness("status", "--session", "kpend", "--json", cwd=repo.path).json()
    assert (st["status"], st["stopReason"], st["iterationCount"]) == ("stopped", "stop-requested", 3), st
    third = record(repo, "kpend", 3)
    assert third.outcome == "interrupted" and third.exit_code is None and third.head_commit is None
    wait_for(lambda: cluster_jobs(k8s_config, "kpend") == ([], []), timeout=120, what="the Job to go")
