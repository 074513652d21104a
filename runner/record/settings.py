"""Where the options of `run` come from, and the harness's own environment seams.

`run`'s options are layered; the first layer that sets an option wins:

1. the command line;
2. the environment, `HARNESS_<OPTION>` (e.g. `HARNESS_MAX_ITERATIONS`, `HARNESS_MEMORY`);
3. the repository: `harness.toml` at its top, or the `[tool.harness]` table of its `pyproject.toml`;
4. the user's `$XDG_CONFIG_HOME/harness/config.toml`;
5. the built-in defaults below.

pydantic-settings reads the environment and the TOML files; the layering is done here so that every
effective value can say where it came from (`run --dry-run --json` shows it). Each layer is validated on
its own so a bad value is reported with the file (or variable) and key that hold it.

An engine's options are a table of their own, named after the engine (`[kubernetes]` in a TOML file,
`HARNESS_KUBERNETES__NAMESPACE` in the environment), layered key by key like the others. This layer knows no
engine: the registry (runner.backends.engine_tables) gives `resolve` each engine's table, the model that
validates it, the flat options that older files and `run`'s own flags use for its keys (`kube_namespace`), and
the keys a repository may set (by default none: a repository must not send its agent to another engine).

The environment seams (`HarnessEnv`) live in runner/base/seams.py, read without pydantic.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runner.base.errors import UsageError
from runner.base.limits import parse_duration, parse_size
from runner.base.paths import PYPROJECT, PYPROJECT_TABLE, REPO_FILE
from runner.base.protect import MAX_PATTERNS, pattern_problem
from runner.base.seams import ENV_PREFIX, SEAMS
from runner.record.layers import (
    EngineTable,
    Layer,
    check_table,
    engine_env,
    env_var,
    fold,
    refuse_strays,
    user_config_file,
)
from runner.record.notify import parse_events, parse_target

RUNTIMES = ("runc", "runsc")
NETWORKS = ("none", "allowlist")
CHOICES = {"runtime": RUNTIMES, "network": NETWORKS}  # the engine (`backend`) is checked by its registry

# A repository's files are written by the agents the harness runs (and merged by the user): they may not
# widen what leaves the sandbox (secrets in, traffic out) or pick the weaker runtime.
REPO_FORBIDDEN = frozenset(
    {
        "env",
        "network",
        "allow_hosts",
        "setup_allow_hosts",
        "runtime",
        "backend",
        "slots",  # the machine's cap on sessions at once: its owner's to set, not a repository's
        "notify",  # a cmd: target runs on the host, a URL receives the report
    }
)
# Options that are alternatives of each other: they come together from the first layer that sets either.
GROUPS = (("agent", "agent_cmd"), ("network", "allow_hosts"))


def _text(value: object) -> object:
    """TOML and the environment may give a size or a duration as a bare number."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _size(value: str, *, minimum: int) -> str:
    try:
        size = parse_size(value, option="size")
    except UsageError:
        raise ValueError(f"{value!r} is not a positive size (e.g. 512m, 2g)") from None
    if size < minimum:
        raise ValueError(f"{value!r} is below the minimum of {minimum // 1024**2} MiB")
    return value


def _duration(value: str) -> str:
    try:
        parse_duration(value, option="duration")
    except UsageError:
        raise ValueError(f"{value!r} is not a positive duration (e.g. 90s, 30m, 2h)") from None
    return value


def _names(value: object) -> object:
    """The environment gives a list as `a,b` (or JSON); TOML and the command line give a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


Size = Annotated[str, BeforeValidator(_text)]
Duration = Annotated[str, BeforeValidator(_text)]
Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_names)]


class RunOptions(BaseModel):
    """The options of `harness run` that have defaults. A field's TOML key is its name; its environment
    variable is `HARNESS_` and the name in capitals; its command-line option is `--` and the name with
    dashes (`env` is `--env`, `allow_hosts` is `--allow-host`, `setup_allow_hosts` is `--setup-allow-host`,
    `setup_inputs` is `--setup-input`, each repeatable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str | None = Field(
        default=None,
        description="Built-in agent: demo, claude-code, codex or aider (demo when neither this nor agent_cmd is set).",
    )
    agent_cmd: str | None = Field(
        default=None, description="Run this command with `sh -c` in the container instead of a built-in agent."
    )
    image: str | None = Field(
        default=None,
        description="Container image (default: devcontainer.json's, else the agent's own); an image not built on "
        "harness-base is derived as IMAGE + agent (docs/environments.md).",
    )
    model: str | None = Field(default=None, description="Model name passed to the agent.")
    auth: Literal["api-key", "subscription"] | None = Field(
        default=None,
        description="Which host credential serves the model calls: api-key, or subscription (a Claude token, a "
        "ChatGPT sign-in); default: an API key when there is one.",
    )
    max_turns: int | None = Field(default=None, ge=1, description="Turns per iteration, for agents that take it.")
    max_iterations: int = Field(default=10, ge=1, description="Iterations the run may use.")
    cpus: float = Field(default=1.0, gt=0, le=512, description="CPUs of the agent container.")
    memory: Size = Field(default="2g", description="Memory cap of the agent container, no swap (e.g. 512m, 2g).")
    pids: int = Field(default=512, ge=16, description="Process cap of the agent container.")
    iteration_timeout: Duration = Field(default="30m", description="Wall clock per iteration (e.g. 90s, 30m, 2h).")
    max_time: Duration | None = Field(default=None, description="Wall clock for the whole run (default: none).")
    max_disk: Size = Field(default="10g", description="Size the copy may grow to; the run stops past it.")
    max_cost: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="US dollars the run may spend on model calls."
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Tokens the run may use on model calls (a subscriber's budget)."
    )
    wait_on_limit: Duration | None = Field(
        default=None,
        description="Longest wait for a spent usage window to reopen (default: the rest of max_time); 0: never wait.",
    )
    stuck_after: int = Field(default=3, ge=1, description="End as stuck after this many iterations without a change.")
    backoff_base: Duration = Field(
        default="60s", description="First wait after a rate limit (doubles each time, up to 30m)."
    )
    runtime: str = Field(
        default="runc", description="Container runtime: runc, or runsc (gVisor). Not in a repository's files."
    )
    backend: str = Field(
        default="docker",
        pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="Where containers run: docker (the local engine) or kubernetes (Jobs on a cluster); its options "
        "are the engine's table (below). Not in a repository's files.",
    )
    network: str = Field(
        default="none",
        description="none (no network at all) or allowlist (only allow_hosts). Not in a repository's files.",
    )
    allow_hosts: Names = Field(
        default=(), description="HOST[:PORT] the agent may reach through the egress proxy. Not in a repository's files."
    )
    env: Names = Field(
        default=(),
        description="Names of host variables passed into the container (values redacted). Not in a repository's files.",
    )
    check: str | None = Field(
        default=None, description="A command (sh -c, in the container) that must pass before 'done' completes the run."
    )
    protect: Names | None = Field(
        default=None,
        description="Paths the check runs with as the base commit has them (patterns from the repository's top: "
        "`*` within a name, `**` across directories; a directory protects what is below it); an agent's change "
        "to them is flagged. Default, when a check is set: the paths it names, tests/ and the like, test files, "
        "every conftest.py and the test runners' configuration (docs/overnight.md); an empty list: none.",
    )
    setup: str | None = Field(
        default=None,
        description="A command (sh -c) run once in the copy before the first iteration, without the model gateway "
        "or any key (install the project's dependencies); again on resume when its inputs changed.",
    )
    setup_allow_hosts: Names = Field(
        default=(),
        description="HOST[:PORT], or a preset (pypi, npm, crates, go), the setup may reach through its own egress "
        "proxy (default: none). Not in a repository's files.",
    )
    setup_inputs: Names = Field(
        default=(),
        description="Files whose change runs the setup again on resume (default: the usual lockfiles and manifests).",
    )
    keep_awake: bool = Field(
        default=True,
        description="Hold a sleep inhibitor while the session runs (systemd-inhibit, caffeinate); false: "
        "--no-keep-awake.",
    )
    slots: int | None = Field(
        default=None,
        ge=1,
        description="Sessions of this machine that may run at once; the others wait in the queue (harness queue). "
        "Default: max(1, min(cores // cpus, memory // session memory)). Not in a repository's files.",
    )
    notify: Names = Field(
        default=(),
        description="Where to send notifications: cmd:COMMAND (run on the host, the report's JSON on stdin), "
        "https://URL (a POST of that JSON), slack+https://URL or ntfy+https://URL (docs/overnight.md). Never shown "
        "whole: its URL's secrets are redacted. Not in a repository's files.",
    )
    notify_on: Names = Field(
        default=("end",),
        description="The events notified: end (every end of the run), blocked, usage-limit, budget, failures, or all.",
    )

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        return _size(value, minimum=6 * 1024**2)

    @field_validator("max_disk")
    @classmethod
    def _disk(cls, value: str) -> str:
        return _size(value, minimum=1024**2)

    @field_validator("iteration_timeout", "backoff_base", "max_time")
    @classmethod
    def _durations(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)

    @field_validator("protect")
    @classmethod
    def _protect(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if len(value) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} protected paths")
        for pattern in value:
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValueError(problem)
        return tuple(dict.fromkeys(value))

    @field_validator("notify")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for target in value:
            parse_target(target)  # its ValueError names no secret
        return value

    @field_validator("notify_on")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(event.value for event in parse_events(value))

    @field_validator("runtime", "network")
    @classmethod
    def _choice(cls, value: str, info: ValidationInfo) -> str:
        problem = choice_problem(str(info.field_name), value)
        if problem is not None:
            raise ValueError(problem)
        return value


def choice_problem(option: str, value: str) -> str | None:
    """Why `value` is not one of the choices of `option` (runtime, network, backend); None when it is."""
    allowed = CHOICES[option]
    if value in allowed:
        return None
    hint = " (host networking is not offered: use allowlist)" if option == "network" and value == "host" else ""
    return f"{value!r} is not one of {', '.join(allowed)}{hint}"


class RunSettings(BaseSettings, RunOptions):
    """How pydantic-settings finds `RunOptions` in the environment and in TOML files."""

    # An empty variable (`HARNESS_MODEL= harness run ...`) is as good as unset.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, pyproject_toml_table_header=PYPROJECT_TABLE
    )


@dataclass(frozen=True)
class Resolved:
    settings: RunOptions
    sources: dict[str, str]  # option -> "cli" | "env:HARNESS_X" | "file:PATH" | "user:PATH" | "default"
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine -> the keys set, as given

    def engine(self) -> dict[str, Any]:
        """The chosen engine's configuration as the layers give it: its `type` and the keys set."""
        return {"type": self.settings.backend, **self.engines.get(self.settings.backend, {})}


def _read_toml(path: Path, *, pyproject: bool = False) -> dict[str, Any]:
    """The settings in a TOML file (in a pyproject: its `[tool.harness]` table), read by pydantic-settings."""
    try:
        if pyproject:
            values = PyprojectTomlConfigSettingsSource(RunSettings, path)()
        else:
            values = TomlConfigSettingsSource(RunSettings, path)()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the harness settings: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: the harness settings must be a table")
    return dict(values)


def repo_layer(top: Path) -> Layer | None:
    """The repository's settings: `harness.toml`, or `[tool.harness]` in `pyproject.toml` (not both)."""
    own, pyproject = top / REPO_FILE, top / PYPROJECT
    found: list[Layer] = []
    if own.is_file():
        found.append(Layer(f"file:{own}", _read_toml(own)))
    if pyproject.is_file():
        values = _read_toml(pyproject, pyproject=True)
        if values or _has_table(pyproject):
            found.append(Layer(f"file:{pyproject}", values))
    if len(found) > 1:
        raise UsageError(
            f"{own}: the repository also has [tool.harness] in {pyproject}: keep the settings in one of them"
        )
    return found[0] if found else None


def _has_table(pyproject: Path) -> bool:
    tool = tomllib.loads(pyproject.read_text("utf-8")).get("tool")
    return isinstance(tool, dict) and "harness" in tool


def user_layer(path: Path | None = None) -> Layer | None:
    path = path or user_config_file()
    return Layer(f"user:{path}", _read_toml(path)) if path.is_file() else None


def env_layer(environ: Mapping[str, str] | None = None, engines: tuple[EngineTable, ...] = ()) -> Layer:
    source = EnvSettingsSource(RunSettings)
    if environ is not None:
        source.env_vars = {k.lower(): v for k, v in environ.items()}
    return Layer("env", {**source(), **engine_env(os.environ if environ is None else environ, engines)})


def _check(layer: Layer, engines: tuple[EngineTable, ...] = ()) -> None:
    """Unknown keys and bad values of one layer, as one line naming the file (or variable) and key."""
    tables = {engine.name: engine for engine in engines}
    where = layer.source.split(":", 1)[-1]
    for key, value in layer.values.items():
        if key in tables:
            check_table(layer, tables[key], value)
            continue
        if key not in RunOptions.model_fields:
            hint = f" (set {env_var(key)} in the environment)" if key in SEAMS else ""
            raise UsageError(f"{where}: unknown key {key!r}{hint}")
        if layer.source.startswith("file:") and key in REPO_FORBIDDEN:
            raise UsageError(
                f"{layer.where(key)} may not be set by a repository (agents write its files): "
                f"set it on the command line, in {env_var(key)} or in {user_config_file()}"
            )
    options = {key: value for key, value in layer.values.items() if key not in tables}
    try:
        RunOptions.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{layer.where(key)}: {msg}") from None
    backend = options.get("backend")
    if engines and backend is not None and backend not in tables:
        raise UsageError(f"{layer.where('backend')}: {backend!r} is not one of {', '.join(tables)}")


def merge(layers: list[Layer], engines: tuple[EngineTable, ...] = ()) -> Resolved:
    """The first layer (highest precedence first) that sets an option gives its value."""
    layers = [fold(layer, engines) for layer in layers]
    for layer in layers:
        _check(layer, engines)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    grouped = {key: group for group in GROUPS for key in group}
    for key in RunOptions.model_fields:
        if key in sources:
            continue
        keys = grouped.get(key, (key,))
        first = next((layer for layer in layers if any(k in layer.values for k in keys)), None)
        for k in keys:
            if first is not None and k in first.values:
                values[k], sources[k] = first.values[k], first.origin(k)
            else:
                sources[k] = "default"  # also when the other option of its pair was set
    settings = RunOptions.model_validate(values)
    tables: dict[str, dict[str, Any]] = {}
    for engine in engines:
        for key in engine.options():
            name = f"{engine.name}.{key}"
            first = next((layer for layer in layers if key in layer.values.get(engine.name, {})), None)
            if engine.name == settings.backend:  # the chosen engine's keys, as every option's, say where from
                sources[name] = first.origin(name) if first is not None else "default"
            if first is not None:
                tables.setdefault(engine.name, {})[key] = first.values[engine.name][key]
    refuse_strays(settings.backend, engines, tables, layers)
    return Resolved(settings=settings, sources=sources, engines=tables)


def resolve(cli: Mapping[str, object], *, repo_top: Path | None, engines: tuple[EngineTable, ...] = ()) -> Resolved:
    """`run`'s effective options from the command line (None: not given), the environment, the
    repository at `repo_top`, the user's config file and the built-in defaults; `engines`: each engine's table
    (runner.backends.engine_tables), without which no engine's options are taken."""
    given = {k: v for k, v in cli.items() if v is not None and v != ()}
    found = [Layer("cli", given), env_layer(engines=engines), repo_layer(repo_top) if repo_top else None, user_layer()]
    return merge([layer for layer in found if layer is not None], engines)
