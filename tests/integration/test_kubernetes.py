"""End to end on the k8s lab (a real control plane, kubelet and scheduler) and real git:
`harness run --backend kubernetes` as a user would type it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.backends.kubernetes.config import KubernetesConfig
from runner.record.journal import load_model
from runner.record.models import IterationRecord
from tests.helpers import HARNESS, GitRepo, harness, run_args, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]


def report(state: str, summary: str) -> str:
    return f'printf \'{{"state": "{state}", "summary": "{summary}"}}\' > "$HARNESS_STATUS_FILE"'


def k8s(config: KubernetesConfig, pending: str = "90s") -> list[str]:
    """The options of a run on the lab; a pod of the test before may still be leaving the one node."""
    assert config.kubeconfig is not None
    return ["--backend", "kubernetes", "--kubeconfig", config.kubeconfig, "--kube-namespace", config.namespace,
            "--kube-pending-timeout", pending, "--kube-image-pull-policy", "Never"]  # fmt: skip


def cluster_jobs(config: KubernetesConfig, session: str) -> tuple[list[str], list[str]]:
    """The Jobs and pods of a session in the test's namespace."""
    from kubernetes import client
    from kubernetes import config as loader

    api = loader.new_client_from_config(config_file=config.kubeconfig)
    selector = f"io.solo-harness.session={session}"
    jobs = client.BatchV1Api(api).list_namespaced_job(config.namespace, label_selector=selector).items
    pods = client.CoreV1Api(api).list_namespaced_pod(config.namespace, label_selector=selector).items
    return [j.metadata.name for j in jobs], [p.metadata.name for p in pods]


def deadline_exceeded(config: KubernetesConfig, job: str) -> bool:
    """Whether the job controller has failed the Job for its activeDeadlineSeconds."""
    from kubernetes import client
    from kubernetes import config as loader

    batch = client.BatchV1Api(loader.new_client_from_config(config_file=config.kubeconfig))
    conditions = batch.read_namespaced_job_status(job, config.namespace).status.conditions or []
    return any(c.type == "Failed" and c.reason == "DeadlineExceeded" for c in conditions)


def pod_running(config: KubernetesConfig, job: str) -> bool:
    """Whether the Job's pod has its containers running."""
    from kubernetes import client
    from kubernetes import config as loader

    core = client.CoreV1Api(loader.new_client_from_config(config_file=config.kubeconfig))
    pods = core.list_namespaced_pod(config.namespace, label_selector=f"job-name={job}").items
    statuses = (pods[0].status.container_statuses or []) if pods else []
    return bool(statuses) and all(s.state and s.state.running for s in statuses)


def record(repo: GitRepo, session: str, n: int) -> IterationRecord:
    return load_model(repo.journal(session) / f"iteration-{n:04d}.json", IterationRecord)


def test_a_demo_run_on_kubernetes_completes_with_commits_on_the_branch(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    r = harness(*run_args("kdemo", *k8s(k8s_config), agent="demo", objective="Record two steps", iterations=3),
                cwd=repo.path, timeout=600)  # fmt: skip
    assert r.code == 0, r.stderr
    st = r.json()
    assert st["status"] == "completed" and st["iterationCount"] == 2 and st["commitsAhead"] == 2
    # The agent's commits came back as the checkpoint helper's bundle, harvested as on Docker.
    assert repo.git("log", "--format=%s", "main..harness/kdemo").splitlines() == ["demo: step 2", "demo: step 1"]
    assert "- step 2 (iteration 2" in repo.git("show", "harness/kdemo:DEMO_PROGRESS.md")
    summary = json.loads((repo.journal("kdemo") / "run-summary.json").read_text())
    assert summary["backend"] == {
        "type": "kubernetes", "kubeconfig": k8s_config.kubeconfig, "context": None,
        "namespace": k8s_config.namespace, "pendingTimeoutSeconds": 90.0, "imagePullPolicy": "Never",
    }  # fmt: skip
    # The agent's output streamed from the pod's log into the journal.
    assert "step 1" in (repo.journal("kdemo") / "iteration-0001.log").read_text()
    # Every Job is removed when its container ends.
    assert cluster_jobs(k8s_config, "kdemo") == ([], [])


def test_deadline_and_oom_end_with_their_outcomes(repo: GitRepo, k8s_config: KubernetesConfig) -> None:
    slow = harness(*run_args("kslow", "--iteration-timeout", "5s", *k8s(k8s_config), cmd="sleep 300", iterations=1),
                   cwd=repo.path, timeout=600)  # fmt: skip
    assert slow.json()["lastOutcome"] == "timed-out", slow.stderr
    first = record(repo, "kslow", 1)
    # The timeout counts the pod's start too: one still starting after 5 s (a busy node) never ran, nor harvested.
    assert first.timed_out and (first.exit_code in (137, 143) if first.head_commit else first.exit_code is None)

    hog = harness(*run_args("khog", "--memory", "64m", *k8s(k8s_config),
                            cmd="head -c 1000m /dev/zero | tail -c 900m > /dev/null", iterations=1), cwd=repo.path,
                  timeout=600)  # fmt: skip
    assert hog.json()["lastOutcome"] == "oom-killed", hog.stderr
    assert record(repo, "khog", 1).oom_killed
    assert cluster_jobs(k8s_config, "kslow") == ([], []) and cluster_jobs(k8s_config, "khog") == ([], [])


def test_an_agent_no_node_can_take_ends_failed_with_the_schedulers_reason(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    ok = harness(*run_args("kbig", *k8s(k8s_config, pending="20s"), cmd=report("working", "first"), iterations=1),
                 cwd=repo.path, timeout=600)  # fmt: skip
    assert ok.json()["lastOutcome"] == "working", ok.stderr
    # The lab's one node has 2 CPUs: 64 fit nowhere. Each iteration ends at once, never a hang.
    big = harness("resume", "--session", "kbig", "--cpus", "64", "--max-iterations", "5", "--json",
                  cwd=repo.path, timeout=600)  # fmt: skip
    st = big.json()
    assert (st["status"], st["stopReason"]) == ("failed", "repeated-failures"), big.stderr
    last = record(repo, "kbig", st["iterationCount"])
    assert last.outcome == "not-started" and last.failure_class == "not-started"
    assert last.backend_error is not None and "Insufficient cpu" in last.backend_error
    assert cluster_jobs(k8s_config, "kbig") == ([], [])


def test_a_vanished_pod_is_a_lost_iteration_and_resume_works(repo: GitRepo, k8s_config: KubernetesConfig) -> None:
    from kubernetes import client
    from kubernetes import config as loader

    core = client.CoreV1Api(loader.new_client_from_config(config_file=k8s_config.kubeconfig))
    agent = f"if grep -q go-on /harness/prompt.md; then {report('done', 'resumed')}; else echo agent-up; sleep 300; fi"
    r = harness(*run_args("kgone", "--detach", *k8s(k8s_config), cmd=agent, iterations=2), cwd=repo.path)
    assert r.code == 0, r.stderr
    selector = "io.solo-harness.session=kgone,io.solo-harness.role=agent"

    def agent_pod() -> Any:
        pods = core.list_namespaced_pod(k8s_config.namespace, label_selector=selector).items
        running = [p for p in pods if p.status.phase == "Running"]
        return running[0] if running else None

    # Mid-iteration: the agent runs (its output is in the live log), as when its node is lost.
    log = repo.journal("kgone") / "iteration-0001.log"
    wait_for(lambda: log.is_file() and "agent-up" in log.read_text(), timeout=180, what="the agent to run")
    core.delete_namespaced_pod(agent_pod().metadata.name, k8s_config.namespace, grace_period_seconds=0)

    def ended() -> bool:
        return harness("status", "--session", "kgone", "--json", cwd=repo.path).json()["status"] != "running"

    wait_for(ended, timeout=180, what="the run to end")
    st = harness("status", "--session", "kgone", "--json", cwd=repo.path).json()
    assert st["status"] == "interrupted" and "vanished" in (st.get("error") or ""), st
    assert harness("note", "go-on", "--session", "kgone", cwd=repo.path).code == 0
    resumed = harness("resume", "--session", "kgone", "--max-iterations", "1", "--json", cwd=repo.path, timeout=600)
    assert resumed.json()["status"] == "completed", resumed.stderr
    assert resumed.json()["lastSummary"] == "resumed"


def test_gc_and_discard_reap_the_sessions_jobs(repo: GitRepo, k8s_config: KubernetesConfig) -> None:
    from kubernetes import client
    from kubernetes import config as loader

    r = harness(*run_args("kleft", "--detach", *k8s(k8s_config), cmd="sleep 300", iterations=1), cwd=repo.path)
    assert r.code == 0, r.stderr
    wait_for(lambda: any("agent" in j for j in cluster_jobs(k8s_config, "kleft")[0]), timeout=180, what="a Job")
    # The supervisor dies without cleaning up (kill -9): its Job stays in the cluster.
    import os
    import signal

    os.kill(r.json()["pid"], signal.SIGKILL)
    wait_for(lambda: harness("status", "--session", "kleft", "--json", cwd=repo.path).json()["status"] != "running",
             timeout=60, what="the dead supervisor to show")  # fmt: skip
    assert cluster_jobs(k8s_config, "kleft")[0], "the control: the Job outlived its supervisor"
    assert harness("gc", "--json", cwd=repo.path).code == 0
    wait_for(lambda: cluster_jobs(k8s_config, "kleft") == ([], []), timeout=120, what="gc to reap the Job and pod")
    assert harness("discard", "--session", "kleft", "--json", cwd=repo.path).code == 0
    assert cluster_jobs(k8s_config, "kleft") == ([], [])
    assert (
        client.BatchV1Api(loader.new_client_from_config(config_file=k8s_config.kubeconfig))
        .list_namespaced_job(k8s_config.namespace, label_selector="io.solo-harness.session=kleft")
        .items
        == []
    )


def test_an_agent_in_a_pod_reaches_the_model_through_the_api_and_never_holds_the_key(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    import os
    import subprocess

    from kubernetes import client
    from kubernetes import config as loader

    from tests.integration.test_gateway_run import AGENT, REAL_KEY
    from tests.upstreams import Reply, ScriptedUpstream, Usage

    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    api = loader.new_client_from_config(config_file=k8s_config.kubeconfig)
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=2000)
    with ScriptedUpstream(anthropic=[Reply(text="scripted answer", usage=usage, model="claude-sonnet-4-5")]) as up:
        proc = subprocess.Popen([*HARNESS, *run_args("kgw", *k8s(k8s_config), cmd="LINGER=4 python3 agent.py")],
                                cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "ANTHROPIC_BASE_URL": up.url,
                                     "ANTHROPIC_API_KEY": REAL_KEY})  # fmt: skip
        # While the agent lingers, everything the cluster holds of its Job and pod is read back.
        seen: list[str] = []
        selector = "io.solo-harness.session=kgw,io.solo-harness.role=agent"

        def read_back() -> bool:
            jobs = client.BatchV1Api(api).list_namespaced_job(k8s_config.namespace, label_selector=selector).items
            pods = client.CoreV1Api(api).list_namespaced_pod(k8s_config.namespace, label_selector=selector).items
            if jobs and pods:
                seen.append(json.dumps(api.sanitize_for_serialization([*jobs, *pods])))
            return bool(seen) or proc.poll() is not None

        wait_for(read_back, timeout=180, what="the agent's Job and pod")
        seen_in_cluster = seen[0] if seen else ""
        out, err = proc.communicate(timeout=300)
        upstream_saw = up.seen("/v1/messages")
    st = json.loads(out)
    assert st["status"] == "completed", err
    assert seen_in_cluster and REAL_KEY not in seen_in_cluster
    pod = json.loads(seen_in_cluster)[1]["spec"]
    assert "hostNetwork" not in pod and all("hostPath" not in v for v in pod["volumes"])
    # The upstream saw the real key, swapped in by the gateway on this machine; the pod held a placeholder.
    assert [r.headers["x-api-key"] for r in upstream_saw] == [REAL_KEY]
    env_seen = repo.git("show", "harness/kgw:env-seen.txt")
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8787" in env_seen and REAL_KEY not in env_seen
    assert "scripted answer" in repo.git("show", "harness/kgw:answer.txt")
    # Usage and cost are counted as on Docker: 1000*3 + 500*15 + 2000*0.3 per million tokens.
    assert record(repo, "kgw", 1).usage is not None
    assert st["usage"]["costUsd"] == pytest.approx(0.0111) and st["usage"]["requests"] == 1


def test_dry_run_prints_the_job_it_would_submit_and_creates_nothing(
    repo: GitRepo, k8s_config: KubernetesConfig
) -> None:
    r = harness(*run_args("kdry", "--cpus", "1.5", "--memory", "1g", "--iteration-timeout", "10m", "--dry-run",
                          *k8s(k8s_config), agent="demo"), cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    plan = r.json()
    job = plan["submission"]
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("batch/v1", "Job", k8s_config.namespace)
    assert job["spec"]["backoffLimit"] == 0
    # The iteration timeout, plus the pending timeout and the transfer allowance: a backstop.
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 90 + 900
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    main = pod["containers"][0]
    assert main["resources"]["limits"] == {"cpu": "1500m", "memory": str(1024**3)}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["command"][-1] == "harness-demo-agent" and "harness-relay" not in main["command"]  # tunnelled
    assert job["metadata"]["labels"]["io.solo-harness.session"] == "kdry"
    assert [s["port"] for s in plan["services"]] == [8787]
    assert cluster_jobs(k8s_config, "kdry") == ([], []) and not repo.journal("kdry").exists()


def test_a_job_that_makes_no_pod_is_a_clear_error_not_a_hang(k8s_config: KubernetesConfig) -> None:
    from kubernetes import client
    from kubernetes import config as loader

    from runner.backends.kubernetes.engine import KubernetesBackend
    from runner.backends.watchdog import run_container
    from runner.base.errors import BackendError
    from runner.base.output import CappedBuffer
    from runner.record.models import Limits
    from runner.sandbox.container import hardened_spec, labels

    core = client.CoreV1Api(loader.new_client_from_config(config_file=k8s_config.kubeconfig))
    namespace = f"{k8s_config.namespace}-quota"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="no-pods"),
                                       spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}))  # fmt: skip
        core.create_namespaced_resource_quota(namespace, quota)
        wait_for(lambda: core.read_namespaced_resource_quota("no-pods", namespace).status.hard, timeout=60,
                 what="the quota to be in force")  # fmt: skip
        backend = KubernetesBackend(k8s_config.model_copy(update={"namespace": namespace, "pending_timeout": 2}))
        backend.start_grace = 5
        spec = hardened_spec(image="harness-base:latest", command=["true"], limits=Limits(), mounts=(),
                             labels=labels("kquota", "k", "agent"), workdir="/tmp")  # fmt: skip
        with pytest.raises(BackendError, match="made no pod"):
            run_container(backend, spec, timeout=60, output=CappedBuffer())
        assert backend.list_containers({"io.solo-harness.session": "kquota"}) == {}  # the Job went with the error
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")


@pytest.mark.timeout(900)  # the two waits below, on a loaded machine
def test_the_jobs_own_deadline_is_named_when_it_took_the_pod(k8s_config: KubernetesConfig) -> None:
    """The backstop for a lost supervisor: at activeDeadlineSeconds Kubernetes deletes the pod, so the
    iteration is lost, and the error says that deadline took it (not some eviction)."""
    from dataclasses import replace

    from runner.backends.kubernetes.engine import KubernetesBackend
    from runner.base.errors import BackendError
    from runner.base.output import CappedBuffer
    from runner.record.models import Limits
    from runner.sandbox.container import hardened_spec, labels

    # Room for the pod's start on a loaded machine (the start runs in its own thread since the watchdog took it
    # over): a pod the deadline takes before it ran is a start that failed, not what this test is about.
    backend = KubernetesBackend(k8s_config.model_copy(update={"pending_timeout": 12}))
    backend.transfer_allowance = 0  # the Job's deadline: the run's 18 s + 12 s pending
    spec = hardened_spec(image="harness-base:latest", command=["sleep", "300"], limits=Limits(), mounts=(),
                         labels=labels("kdeadline", "k", "agent"), workdir="/tmp")  # fmt: skip
    job = backend.start(replace(spec, deadline_seconds=18), CappedBuffer())  # no watchdog: as if it were gone
    try:
        wait_for(lambda: pod_running(k8s_config, job), timeout=120, what="the agent's pod to run")
        assert not backend.wait(job, 0)  # control: the agent runs, its pod is there
        # Two controllers act in turn, each as fast as the machine lets it: the job controller fails the Job at
        # its deadline (10 s) and deletes the pod, then the kubelet ends it (SIGKILL after the 5 s grace). Each
        # condition is polled in turn, with bounds far past an idle machine's seconds (120 s in all was once too
        # short on a busy one); the deadline's condition first, so that `finish` never reads the Job before the
        # controller has written why it failed.
        wait_for(lambda: deadline_exceeded(k8s_config, job), timeout=360, what="the Job's DeadlineExceeded")
        wait_for(lambda: backend.wait(job, 0), timeout=360, what="Kubernetes to end the pod")
        with pytest.raises(BackendError, match=r"reached its own deadline \(activeDeadlineSeconds 30"):
            backend.finish(job)
    finally:
        backend.remove(job)
