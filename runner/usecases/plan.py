"""Plan `run`: the request from the options and the settings, every check, and the plan it prints with
`--dry-run` (nothing is created here; runner/usecases/sessions.py creates and drives the session).

Why one module of this size: the request, its checks and the plan are one path that `--dry-run` prints whole and
`run` follows exactly; each part of the plan that has rules of its own keeps them in its own module (the setup in
runner/loop/setup.py, notifications in runner/record/notify.py, protected paths in runner/loop/protect.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from runner.agents import AgentOptions, resolve_agent
from runner.backends import engine_config, engine_ref, engine_tables
from runner.backends.base import Backend, HostMounts, ImageStore, Overlays, overlay_path
from runner.backends.config import EngineConfig
from runner.backends.docker.config import DockerConfig
from runner.base.errors import RuntimeUnavailableError, SessionExistsError, UsageError
from runner.base.layout import AGENT_UID, GATEWAY_PORT, GATEWAY_SOCKET
from runner.base.names import branch_for, validate_session
from runner.base.paths import data_home, journal_dir, repo_key, run_dir, seed_dir
from runner.gateway.services import Wiring, parse_allow_hosts, subscriptions
from runner.gateway.upstreams import upstreams_from_env
from runner.loop.agent_container import agent_spec
from runner.loop.protect import default_protect
from runner.loop.seed import tree_dir
from runner.loop.setup import DEFAULT_INPUTS, allow_host_texts, cache_root, setup_allow_rules
from runner.loop.workspace import RunDir
from runner.record.gitops import HostGit
from runner.record.journal import Journal
from runner.record.models import (
    AgentInfo,
    CamelModel,
    EngineRef,
    KeepAwake,
    Limits,
    NotifyInfo,
    QueueRecord,
    RunSummary,
    WorktreeInfo,
)
from runner.record.notify import notify_plan, shown_targets
from runner.record.settings import resolve
from runner.sandbox import derive, images
from runner.sandbox.environment import EnvironmentPlan, local_engine, refuse_plain_image, resolve_environment
from runner.usecases.credentials import choose_credentials
from runner.usecases.options import LimitOptions, check_choice, check_command, check_iterations, secret_values

log = logging.getLogger(__name__)

MAX_OBJECTIVE_BYTES = 256 * 1024


@dataclass(frozen=True)
class RunRequest:
    session: str
    objective: str | None = None
    objective_file: Path | None = None
    repo: Path = Path()
    base: str = "HEAD"
    max_iterations: int | None = None
    agent: str | None = None
    agent_cmd: str | None = None
    image: str | None = None
    runtime: str = "runc"
    env_names: tuple[str, ...] = ()
    check: str | None = None
    protect: tuple[str, ...] | None = None  # --protect; None: the default; empty: none
    limits: LimitOptions = field(default_factory=LimitOptions)
    network: str = "none"
    allow_hosts: tuple[str, ...] = ()
    setup: str | None = None
    setup_allow_hosts: tuple[str, ...] = ()
    setup_inputs: tuple[str, ...] = ()
    model: str | None = None
    auth: Literal["api-key", "subscription"] | None = None
    max_turns: int | None = None
    keep_awake: bool = True  # hold a sleep inhibitor while the session runs
    slots: int | None = None  # sessions of this machine at once (None: the default from its cores and memory)
    notify: tuple[str, ...] = ()  # --notify targets as given (secrets included: never shown, runner/record/notify.py)
    notify_on: tuple[str, ...] = ("end",)
    backend: EngineConfig = field(default_factory=DockerConfig)  # the engine and its configuration, validated
    options: Mapping[str, Any] = field(default_factory=dict)  # the effective option values (settings.resolve)
    sources: Mapping[str, str] = field(default_factory=dict)  # option -> where its value came from
    # Make the copy from the repository's shared seed (runner/loop/seed.py): a race's racers set it. Taken only
    # on an engine whose mounts are the host's directories (Docker); elsewhere the copy is a full clone.
    seed: bool = False


def _engine_options(config: EngineConfig) -> dict[str, Any]:
    """The chosen engine's options, in its table (`kubernetes`: {"namespace": ...}); none for an engine without."""
    table = config.model_dump(mode="json", exclude={"type"})
    return {config.type: table} if table else {}


def run_request(
    *,
    session: str,
    objective: str | None,
    objective_file: Path | None,
    repo: Path,
    base: str,
    options: Mapping[str, object],
) -> RunRequest:
    """The request for `run`: the options given (None: not given) merged with the environment, the
    repository's and the user's settings files, and the built-in defaults (runner/record/settings.py)."""
    with HostGit(repo.resolve()) as git:
        top = git.info().top
    resolved = resolve(options, repo_top=top, engines=engine_tables())
    s = resolved.settings
    backend = engine_config(resolved.engine())
    return RunRequest(
        session=session, objective=objective, objective_file=objective_file, repo=repo, base=base,
        max_iterations=s.max_iterations, agent=s.agent, agent_cmd=s.agent_cmd, image=s.image, runtime=s.runtime,
        env_names=s.env, check=s.check, network=s.network, allow_hosts=s.allow_hosts, model=s.model, auth=s.auth,
        protect=s.protect, notify=s.notify, notify_on=s.notify_on,
        setup=s.setup, setup_allow_hosts=s.setup_allow_hosts, setup_inputs=s.setup_inputs,
        max_turns=s.max_turns, slots=s.slots, backend=backend, keep_awake=s.keep_awake,
        limits=LimitOptions(
            cpus=s.cpus, memory=s.memory, pids=s.pids, iteration_timeout=s.iteration_timeout, max_time=s.max_time,
            max_disk=s.max_disk, stuck_after=s.stuck_after, backoff_base=s.backoff_base, max_cost=s.max_cost,
            max_tokens=s.max_tokens, wait_on_limit=s.wait_on_limit,
        ),
        options={**s.model_dump(mode="json"), **_engine_options(backend), "notify": shown_targets(s.notify)},
        sources=resolved.sources,
    )  # fmt: skip


class PlannedMount(CamelModel):
    source: str
    target: str
    read_only: bool


class PlannedService(CamelModel):
    name: str
    port: int
    socket: str


class GatewayPlan(CamelModel):
    """The model gateway a run will get (the key's presence, never its value)."""

    socket: str
    in_container: str  # the base URL the agent uses
    upstreams: dict[str, str]  # provider -> where requests go
    keys_present: list[str]  # providers whose key the host's environment holds
    credentials: dict[str, str] = Field(default_factory=dict)  # provider -> the credential the run uses: kind, variable
    max_cost_usd: float | None
    max_tokens: int | None = None


class SetupPlan(CamelModel):
    """The setup phase a run will have, and where its command came from."""

    command: str
    source: Literal["flag", "config", "devcontainer"]
    allow_hosts: list[str]  # what its own egress proxy will allow (presets expanded); none: no network
    inputs: list[str]  # files whose change runs it again on resume
    cache: str  # the per-user package cache it may write


class RunPlan(CamelModel):
    """What `run` will do; printed by `--dry-run --json` (nothing is created)."""

    session: str
    repo: str
    objective: str
    journal_dir: str
    run_dir: str
    workspace: str
    seed: str | None = None  # the shared seed the copy borrows its objects from (null: a full clone)
    lower: str | None = None  # the seed's tree the copy is an overlay of (null: a checkout of its own)
    branch: str
    base_ref: str
    base_commit: str
    image: str
    image_state: str
    agent: AgentInfo
    limits: Limits
    network: str
    allow_hosts: list[str]
    auth: Literal["api-key", "subscription"] | None = None
    gateway: GatewayPlan
    runtime: str
    env_names: list[str]
    check: str | None
    keep_awake: bool = True  # a sleep inhibitor held while the session runs (runner/base/keepawake.py)
    protect: list[str] = Field(default_factory=list)  # the protected paths the check runs with
    protect_source: Literal["flag", "config", "default", "off"] | None = None
    setup: SetupPlan | None = None
    notify: NotifyInfo | None = None  # where notifications go, redacted (kind and host only)
    # Which image and why (flag, configuration, devcontainer.json, default), what is derived or built for it.
    environment: EnvironmentPlan | None = None
    backend: EngineRef  # as the session's journal will keep it
    slots: int | None = None  # --slots: sessions of this machine at once (None: the default)
    slots_in_force: int = 1  # the cap the session will wait under: --slots, or what its engine holds
    # How that cap was found: `--slots`, or the engine's account (this machine's cores and memory, the cluster's
    # nodes, or why the cluster could not be asked and which default stands instead).
    slots_basis: str = "--slots"
    user: str = ""
    mounts: list[PlannedMount] = Field(default_factory=list)
    hardening: dict[str, object] = Field(default_factory=dict)
    # What the backend would submit for the first iteration's agent (Docker's create arguments, or a
    # Kubernetes Job manifest), made by the same code as a real run's; --env values are placeholders.
    submission: dict[str, object] = Field(default_factory=dict)
    services: list[PlannedService] = Field(default_factory=list)  # host services on the agent's loopback
    engine_version: str
    options: dict[str, Any] = Field(default_factory=dict)  # each option's effective value (`run` options only)
    # option -> "cli", "env:HARNESS_X", "file:PATH" (the repository), "user:PATH" or "default"
    sources: dict[str, str] = Field(default_factory=dict)


def _read_objective(request: RunRequest) -> str:
    if (request.objective is None) == (request.objective_file is None):
        raise UsageError("give exactly one of --objective or --objective-file")
    if request.objective_file is not None:
        try:
            data = request.objective_file.read_bytes()[: MAX_OBJECTIVE_BYTES + 1]
        except OSError as exc:
            raise UsageError(f"--objective-file: cannot read {request.objective_file}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--objective-file: {request.objective_file} is not UTF-8 text") from None
    else:
        text = request.objective or ""
    if len(text.encode()) > MAX_OBJECTIVE_BYTES:
        raise UsageError(f"the objective is longer than {MAX_OBJECTIVE_BYTES} bytes")
    if not text.strip():
        raise UsageError("the objective is empty")
    return text


def plan_run(backend: Backend, request: RunRequest) -> RunPlan:
    """Check everything `run` needs and return the plan. Creates nothing."""
    session = validate_session(request.session)
    objective = _read_objective(request)
    limits = request.limits.apply(Limits())
    if request.max_iterations is not None:
        limits = limits.model_copy(update={"max_iterations": check_iterations(request.max_iterations)})
    if request.max_turns is not None and request.max_turns < 1:
        raise UsageError("--max-turns must be at least 1")
    upstreams = upstreams_from_env(prefer=request.auth)
    found = {p: c for p, u in upstreams.items() if (c := u.as_credential()) is not None}
    model, credentials = choose_credentials(
        request.agent or ("custom" if request.agent_cmd is not None else "demo"), request.model, found
    )
    options = AgentOptions(model=model, max_turns=request.max_turns)
    name, command, default_image = resolve_agent(request.agent, request.agent_cmd, options)
    image = request.image or default_image
    if os.getuid() == AGENT_UID:
        raise UsageError(f"the host user has uid {AGENT_UID}, the agent's uid: run harness as another user")

    with HostGit(request.repo.resolve()) as git:
        repo = git.info()
        base_commit = git.resolve_commit(request.base)
        _refuse_existing(repo.top, session, git)
        check = check_command(request.check, option="--check")
        protect, protect_source = _protect_plan(request, check, lambda: git.tree_paths(base_commit))
    secret_values(request.env_names)
    engine = backend.check()
    check_choice("runtime", request.runtime)
    if request.runtime not in engine.runtimes:
        raise RuntimeUnavailableError(
            f"the Docker engine has no runtime {request.runtime!r} (it has {', '.join(engine.runtimes)}); "
            "register it in /etc/docker/daemon.json (see docs/security.md)"
        )
    environment = None
    state: str
    image_source: Literal["flag", "config"] = "flag" if request.sources.get("image", "cli") == "cli" else "config"
    if isinstance(backend, ImageStore):
        # --image (or the configuration), else the repository's devcontainer.json, else the agent's own image;
        # a plain image becomes IMAGE + agent, derived by the harness (runner/sandbox/environment.py).
        environment = resolve_environment(
            backend, repo=repo.top, base_commit=base_commit, agent=name, default_image=default_image,
            image=request.image, image_source=image_source,
        )  # fmt: skip
        image, state = environment.image, environment.state
        for note in environment.notes:
            log.warning("%s", note)
        if state == "missing" and environment.base is not None and not backend.image_exists(environment.base):
            raise derive.missing_base(environment.base)  # the reason, naming the image the user gave
    else:
        state = images.image_state(backend, image)  # the cluster pulls it, as named
        if request.image is not None:
            # Derived images are built here and reach a cluster only as the user brings them (docs/kubernetes.md):
            # an ordinary image this machine holds is refused, naming `harness images build ... --from`.
            refuse_plain_image(backend, local_engine(), request.image, name, image_source)
    if state == "missing":
        images.ensure(backend, image)

    allow_hosts = _network_plan(request.network, request.allow_hosts)
    setup = _setup_plan(request, environment, local=isinstance(backend, ImageStore))
    seed = seed_dir(repo.top) if request.seed and isinstance(backend, HostMounts) else None
    if request.seed and seed is None:
        log.info("the %s engine copies its mounts: the copy is a full clone, not one from the seed", backend.name)
    rd = RunDir(run_dir(repo.top, session), seed=seed)
    if seed is not None and isinstance(backend, Overlays):
        # The copy is an overlay of the seed's tree of its base commit: one checkout for every racer over it
        # (unless the engine cannot mount one here: runner.loop.overlay_probe, asked when the session is made).
        lower = tree_dir(seed, base_commit)
        if all(overlay_path(p) for p in (rd.workspace, rd.overlay_work, lower)):
            rd = RunDir(rd.root, seed=seed, lower=lower)
        else:
            log.info("the harness home's path cannot name an overlay: the copy has a checkout of its own")
    plan = RunPlan(
        session=session,
        repo=str(repo.top),
        objective=objective,
        journal_dir=str(journal_dir(repo.top, session)),
        run_dir=str(rd.root),
        workspace=str(rd.workspace),
        seed=str(seed) if seed is not None else None,
        lower=str(rd.lower) if rd.lower is not None else None,
        branch=f"harness/{session}",
        base_ref=request.base,
        base_commit=base_commit,
        image=image,
        image_state=state,
        agent=AgentInfo(name=name, command=command, model=model, max_turns=request.max_turns),
        limits=limits,
        network=request.network,
        auth=request.auth,
        allow_hosts=allow_hosts,
        gateway=GatewayPlan(
            socket=str(rd.net / GATEWAY_SOCKET),
            in_container=f"http://127.0.0.1:{GATEWAY_PORT}",
            upstreams={name: u.base_url for name, u in upstreams.items()},
            keys_present=sorted(name for name, u in upstreams.items() if u.key),
            credentials={c.provider: c.describe() for c in credentials},
            max_cost_usd=limits.max_cost_usd,
            max_tokens=limits.max_tokens,
        ),
        runtime=request.runtime,
        env_names=list(request.env_names),
        check=check,
        keep_awake=request.keep_awake,
        protect=protect,
        protect_source=protect_source,
        setup=setup,
        notify=notify_plan(request.notify, request.notify_on),
        environment=environment,
        backend=engine_ref(request.backend),
        slots=_slots(request.slots),
        engine_version=engine.version,
        options=dict(request.options),
        sources=dict(request.sources),
    )
    spec = agent_spec(
        summary=new_summary(plan), iteration=1, run_dir=rd, repo_key=repo_key(repo.top),
        secrets={name: f"<the value of ${name} here>" for name in request.env_names},
        wiring=Wiring(rd.net, egress=request.network == "allowlist", subscriptions=subscriptions(upstreams)),
    )  # fmt: skip
    if request.slots is None:
        held = backend.capacity(cpus=limits.cpus, memory_bytes=limits.memory_bytes)
        plan.slots_in_force, plan.slots_basis = held.sessions, held.basis
    else:
        plan.slots_in_force = request.slots
    plan.user = spec.user
    plan.mounts = [PlannedMount(source=str(m.source), target=m.target, read_only=m.read_only) for m in spec.mounts]
    plan.hardening = {to_camel(k): v for k, v in asdict(spec.posture).items()}
    # What the watchdog sets when the iteration runs (its timeout), so a backend can show its backstop.
    plan.submission = backend.submission(replace(spec, deadline_seconds=limits.iteration_timeout_seconds))
    plan.services = [PlannedService(name=s.name, port=s.port, socket=str(s.socket)) for s in spec.services]
    return plan


def _slots(slots: int | None) -> int | None:
    if slots is not None and slots < 1:
        raise UsageError("--slots must be at least 1")
    return slots


def _network_plan(network: str, allow_hosts: tuple[str, ...]) -> list[str]:
    """The allowlist as it will be enforced (normalised), after checking the options agree."""
    check_choice("network", network)
    if network == "none" and allow_hosts:
        raise UsageError("--allow-host needs --network allowlist")
    if network == "allowlist" and not allow_hosts:
        raise UsageError("--network allowlist needs at least one --allow-host HOST[:PORT]")
    rules = parse_allow_hosts(allow_hosts)
    return [f"[{r.host}]:{r.port}" if ":" in r.host else f"{r.host}:{r.port}" for r in rules]


def _setup_plan(request: RunRequest, environment: EnvironmentPlan | None, *, local: bool) -> SetupPlan | None:
    """The setup: --setup (or the configuration's), else the devcontainer's create commands. `local`: the engine
    runs on this machine with its images (the setup's cache is keyed by the image's id there)."""
    command, source = request.setup, None
    if command is None and environment is not None and environment.setup_commands:
        command, source = " && ".join(f"( {c} )" for c in environment.setup_commands), "devcontainer"
    if command is None:
        if request.setup_allow_hosts:
            raise UsageError("--setup-allow-host needs --setup CMD")
        return None
    check_command(command, option="--setup")
    if not local:
        raise UsageError("--setup needs --backend docker for now (the setup's cache and network are host-side)")
    if source is None:
        source = "flag" if request.sources.get("setup", "cli") == "cli" else "config"
    return SetupPlan(
        command=command,
        source=source,
        allow_hosts=allow_host_texts(setup_allow_rules(request.setup_allow_hosts)),
        inputs=list(request.setup_inputs or DEFAULT_INPUTS),
        cache=str(cache_root(data_home())),
    )


def _protect_plan(
    request: RunRequest, check: str | None, tree: Callable[[], set[str]]
) -> tuple[list[str], Literal["flag", "config", "default", "off"] | None]:
    """The protected paths the check will run with, and where they came from (none without a check)."""
    if check is None:
        return [], None
    if request.protect is None:
        return default_protect(check, tree()), "default"
    if not request.protect:
        return [], "off"
    return list(request.protect), "flag" if request.sources.get("protect", "cli") == "cli" else "config"


def _refuse_existing(top: Path, session: str, git: HostGit) -> None:
    journal = Journal.for_repo(top, session)
    if journal.dir.exists() and any(journal.dir.iterdir()):
        raise SessionExistsError(
            f"session {session!r} already exists ({journal.dir}): use 'harness resume' or another name"
        )
    if git.ref_commit(branch_for(session)) is not None:
        raise SessionExistsError(f"branch harness/{session} already exists in {top}: delete it or pick another name")
    if run_dir(top, session).exists():
        raise SessionExistsError(f"a copy for session {session!r} already exists at {run_dir(top, session)}")


def new_summary(plan: RunPlan) -> RunSummary:
    """The summary a session starts with, as `plan` describes it."""
    return RunSummary(
        session_id=plan.session,
        objective=plan.objective,
        max_iterations=plan.limits.max_iterations,
        worktree=WorktreeInfo(
            base_ref=plan.base_ref,
            base_commit=plan.base_commit,
            path=plan.workspace,
            branch=plan.branch,
            seed=plan.seed,
            lower=plan.lower,
        ),
        repo=plan.repo,
        run_dir=plan.run_dir,
        image=plan.image,
        backend=plan.backend,
        runtime=plan.runtime,
        agent=plan.agent,
        env_names=plan.env_names,
        network=plan.network,
        allow_hosts=plan.allow_hosts,
        auth=plan.auth,
        check_command=plan.check,
        protected_paths=plan.protect,
        protect_source=plan.protect_source,
        setup_command=plan.setup.command if plan.setup else None,
        setup_source=plan.setup.source if plan.setup else None,
        setup_allow_hosts=plan.setup.allow_hosts if plan.setup else [],
        setup_inputs=plan.setup.inputs if plan.setup else [],
        container_env=plan.environment.container_env if plan.environment else {},
        notify=plan.notify,
        limits=plan.limits,
        head_commit=plan.base_commit,
        keep_awake=KeepAwake(enabled=plan.keep_awake),
        queue=QueueRecord(slots=plan.slots),
    )
