"""The engines: container engines behind one interface, split by capability (`runner.backends.base`), and the
registry that finds them by type.

An engine knows nothing of runs: it may import `runner.record` and `runner.base` only.

Each engine is a folder here: its configuration (`config.py`, a pydantic model whose literal `type` is the
engine's name, importing no SDK) and its engine (`engine.py`, the `Backend` that imports the SDK). `ENGINES`
names both by their import paths, so a command imports an engine's SDK only when it opens that engine. A new
engine (Podman, a VM) is a new folder and one line in `ENGINES`; the settings' table of its options, the
journal's reference to it and `--backend NAME` come from its configuration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from runner.backends.base import Backend
from runner.backends.config import EngineConfig
from runner.base.errors import UsageError
from runner.record.layers import EngineTable
from runner.record.models import EngineRef


@dataclass(frozen=True)
class Engine:
    """A registered engine: where its configuration and its engine are (`module:Class`)."""

    config: str
    engine: str


ENGINES: dict[str, Engine] = {
    "docker": Engine("runner.backends.docker.config:DockerConfig", "runner.backends.docker.engine:DockerBackend"),
    "kubernetes": Engine(
        "runner.backends.kubernetes.config:KubernetesConfig", "runner.backends.kubernetes.engine:KubernetesBackend"
    ),
}
LOCAL = "docker"  # this machine's own engine: the one that builds and keeps images


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def config_class(name: str) -> type[EngineConfig]:
    """The configuration model of the engine `name`. Raises UsageError for an engine that is not registered."""
    if name not in ENGINES:
        raise UsageError(f"no engine {name!r} (known: {', '.join(ENGINES)})")
    found: type[EngineConfig] = _load(ENGINES[name].config)
    return found


def engine_config(given: EngineRef | Mapping[str, object] | None = None) -> EngineConfig:
    """The validated configuration of the engine that `given` names by its `type` (a session's journal reference,
    or the options of `run`); None: the local engine's. Raises UsageError, naming the engine and the field."""
    values = dict(given.model_dump(by_alias=True) if isinstance(given, EngineRef) else given or {"type": LOCAL})
    name = str(values.get("type", LOCAL))
    try:
        return config_class(name).model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise UsageError(f"the {name} engine's configuration: {where}: {err['msg']}") from None


def engine_tables() -> tuple[EngineTable, ...]:
    """Each engine's table in `run`'s settings (runner.record.settings), from its configuration."""
    models = {name: config_class(name) for name in ENGINES}
    return tuple(EngineTable(name, model, dict(model.flat), model.repository_keys) for name, model in models.items())


def engine_ref(config: EngineConfig) -> EngineRef:
    """What a session's journal keeps of its engine."""
    return EngineRef.model_validate(config.reference())


def open_engine(given: EngineConfig | EngineRef | None = None) -> Backend:
    """The engine `given` names: a run's configuration, a session's journal reference; None: this machine's own
    engine (what `images` and `gc` use for the images it keeps). Imports that engine's SDK, no other; reaches
    nothing yet (its first call does)."""
    config = given if isinstance(given, EngineConfig) else engine_config(given)
    engine: Callable[[EngineConfig], Backend] = _load(ENGINES[config.type].engine)  # built from its configuration
    return engine(config)
