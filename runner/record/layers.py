"""The layers of `run`'s settings (runner/record/settings.py), and the engines' tables in them.

A layer is one place values come from (the command line, the environment, a file), and says what it calls each
key in its errors. An engine's table (`[kubernetes]`) comes into a layer by its keys (`namespace`) or by the
engine's flat options (`kube_namespace`, what `run`'s flags and older files say); this module folds the second
into the first, checks a table against the engine's model, and refuses the options of an engine not chosen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runner.base.errors import UsageError
from runner.base.seams import ENV_PREFIX


def env_var(key: str) -> str:
    """The environment variable of an option (`memory`: HARNESS_MEMORY) or of an engine's key
    (`kubernetes.namespace`: HARNESS_KUBERNETES__NAMESPACE)."""
    return ENV_PREFIX + key.upper().replace(".", "__")


def cli_option(field: str) -> str:
    singular = {
        "allow_hosts": "--allow-host",
        "setup_allow_hosts": "--setup-allow-host",
        "setup_inputs": "--setup-input",
    }
    return singular.get(field, "--" + field.replace("_", "-"))


def user_config_file() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "harness" / "config.toml"


@dataclass(frozen=True)
class EngineTable:
    """An engine's table in the settings, as the registry gives it (runner.backends.engine_tables)."""

    name: str  # the engine, and its table: `kubernetes`
    model: type[BaseModel]  # validates the table (the engine's configuration: its `type` has a default)
    flat: Mapping[str, str] = field(default_factory=dict)  # a flat option -> its key: `kube_namespace` -> `namespace`
    repository_keys: frozenset[str] = frozenset()  # the keys a repository's files may set

    def options(self) -> list[str]:
        return [name for name in self.model.model_fields if name != "type"]


@dataclass(frozen=True)
class Layer:
    source: str  # "cli", "env", "file:PATH", "user:PATH"
    values: dict[str, Any]  # options, and an engine's name -> its table
    # An engine's key (`kubernetes.namespace`) -> the flat option this layer gave it as (`kube_namespace`).
    flat: dict[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        return f"env:{env_var(self.flat.get(key, key))}" if self.source == "env" else self.source

    def named(self, key: str) -> str:
        """What this layer calls `key`: an option, a variable, a file's key."""
        key = self.flat.get(key, key)
        if self.source == "cli":
            return cli_option(key)
        return env_var(key) if self.source == "env" else key

    def where(self, key: str) -> str:
        """How an error names the place of `key`."""
        if self.source in {"cli", "env"}:
            return self.named(key)
        return f"{self.source.split(':', 1)[1]}: key {self.named(key)!r}"


def engine_env(environ: Mapping[str, str], engines: tuple[EngineTable, ...]) -> dict[str, Any]:
    """The engines' values in the environment: `HARNESS_<ENGINE>__<KEY>` into the engine's table, the flat options
    (`HARNESS_KUBE_NAMESPACE`) as they are, for `fold`. An empty variable is as good as unset."""
    given = {k.upper(): v for k, v in environ.items() if v}
    values: dict[str, Any] = {}
    for engine in engines:
        for key in engine.options():
            if (value := given.get(env_var(f"{engine.name}.{key}"))) is not None:
                values.setdefault(engine.name, {})[key] = value
        for flat in engine.flat:
            if (value := given.get(env_var(flat))) is not None:
                values[flat] = value
    return values


def fold(layer: Layer, engines: tuple[EngineTable, ...]) -> Layer:
    """`layer` with each engine's flat options (`kube_namespace`) in that engine's table (`namespace`)."""
    values = dict(layer.values)
    flat: dict[str, str] = {}
    for engine in engines:
        for option, key in engine.flat.items():
            if option not in values:
                continue
            table = values.setdefault(engine.name, {})
            if not isinstance(table, dict) or key in table:
                raise UsageError(f"{layer.where(option)}: give it once, as {option} or in the {engine.name} table")
            values[engine.name] = {**table, key: values.pop(option)}
            flat[f"{engine.name}.{key}"] = option
    return Layer(layer.source, values, flat)


def check_table(layer: Layer, engine: EngineTable, table: object) -> None:
    """One engine's table of one layer."""
    if not isinstance(table, dict):
        raise UsageError(f"{layer.where(engine.name)}: the {engine.name} engine's options must be a table")
    for key in table:
        name = f"{engine.name}.{key}"
        if key not in engine.options():
            raise UsageError(f"{layer.source.split(':', 1)[-1]}: unknown key {layer.flat.get(name, name)!r}")
        if layer.source.startswith("file:") and key not in engine.repository_keys:
            how = "on the command line, " if name in layer.flat else ""
            raise UsageError(
                f"{layer.where(name)} may not be set by a repository (agents write its files): "
                f"set it {how}in {env_var(layer.flat.get(name, name))} or in {user_config_file()}"
            )
    try:
        engine.model.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = f"{engine.name}.{err['loc'][0]}" if err["loc"] else engine.name
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{layer.where(key)}: {msg}") from None


def refuse_strays(
    backend: str, engines: tuple[EngineTable, ...], tables: dict[str, dict[str, Any]], layers: list[Layer]
) -> None:
    """Options of another engine than the one chosen, set to other than their defaults, are a mistake."""
    for engine in engines:
        if engine.name == backend or not tables.get(engine.name):
            continue
        given = engine.model.model_validate(tables[engine.name])
        default = engine.model()
        names = [
            next(layer for layer in layers if key in layer.values.get(engine.name, {})).named(f"{engine.name}.{key}")
            for key in tables[engine.name]
            if getattr(given, key) != getattr(default, key)
        ]
        if names:
            raise UsageError(f"{' and '.join(names)} {'needs' if len(names) == 1 else 'need'} --backend {engine.name}")
