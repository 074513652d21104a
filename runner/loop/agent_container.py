"""The agent's container for one iteration: the hardened recipe with the copy, the prompt, the outbox, the
run's network and the agent's environment (also what `run --dry-run` shows the engine would submit)."""

from __future__ import annotations

from runner.agents import agent_env, default_endpoints
from runner.backends.base import ContainerSpec, DiskWatch
from runner.base.layout import OUTBOX_DIR, PROMPT_DIR, STATUS_FILE, WORKSPACE, with_merged_output
from runner.gateway.services import Wiring
from runner.loop.setup import tool_path
from runner.loop.workspace import RunDir
from runner.record.models import RunSummary
from runner.sandbox.container import bind, hardened_spec, labels


def setup_env(summary: RunSummary) -> dict[str, str]:
    """What the setup's results add to the agent's and the check's environment: its tool directories."""
    path = tool_path(summary.setup.outputs, WORKSPACE) if summary.setup is not None and summary.setup.passed else ""
    return {"HARNESS_PATH": path} if path else {}


def agent_spec(
    *, summary: RunSummary, iteration: int, run_dir: RunDir, repo_key: str, secrets: dict[str, str],
    wiring: Wiring | None,
) -> ContainerSpec:  # fmt: skip
    """The agent's container for one iteration (also what `run --dry-run` shows the backend would submit)."""
    mounts = [
        *run_dir.copy_mounts(read_only=False),
        bind(run_dir.prompt, PROMPT_DIR, read_only=True),
        bind(run_dir.outbox, OUTBOX_DIR, read_only=False),
    ]
    return hardened_spec(
        image=summary.image,
        command=with_merged_output(summary.agent.command),
        services=wiring.services() if wiring is not None else (),
        limits=summary.limits,
        mounts=tuple(mounts),
        labels=labels(summary.session_id, repo_key, "agent"),
        disk_watch=DiskWatch(WORKSPACE, summary.limits.max_disk_bytes) if summary.limits.max_disk_bytes else None,
        env={
            **summary.container_env,
            **setup_env(summary),
            **secrets,
            # Base URLs of the gateway and placeholder keys, never real ones.
            **agent_env(summary.agent, default_endpoints(wiring.subscriptions if wiring is not None else frozenset())),
            **(wiring.proxy_env() if wiring is not None else {}),
            "HARNESS_SESSION": summary.session_id,
            "HARNESS_ITERATION": str(iteration),
            "HARNESS_MAX_ITERATIONS": str(summary.max_iterations),
            "HARNESS_OBJECTIVE_FILE": f"{PROMPT_DIR}/objective.md",
            "HARNESS_STATUS_FILE": STATUS_FILE,
            "GIT_AUTHOR_NAME": "harness-agent",
            "GIT_AUTHOR_EMAIL": "agent@harness.invalid",
            "GIT_COMMITTER_NAME": "harness-agent",
            "GIT_COMMITTER_EMAIL": "agent@harness.invalid",
        },
        runtime=summary.runtime,
    )
