"""What every engine's configuration is: one pydantic model per engine, chosen by its literal `type`, unknown
fields forbidden, a description on every field. An engine's own model lives beside it
(runner/backends/<engine>/config.py) and imports no SDK: the registry (runner.backends) validates with it
before anything of the engine is imported.

The same model is three things: what `run` takes from the engine's table in the settings (`[kubernetes]`,
snake_case keys: runner/record/settings.py), what a session's journal keeps as its engine (camelCase, as every
journal file: runner.record.models.EngineRef), and what the engine is built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import AliasGenerator, BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from runner.base.errors import UsageError
from runner.base.limits import parse_duration


def _seconds(value: object) -> object:
    """A duration as the settings give it ("5m", "90s") or a number of seconds, as the journal keeps it."""
    if isinstance(value, str):
        try:
            return parse_duration(value, option="duration")
        except UsageError:
            raise ValueError(f"{value!r} is not a positive duration (e.g. 90s, 30m, 2h)") from None
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]


class EngineConfig(BaseModel):
    """An engine's configuration. A subclass sets `type` to a `Literal` of its name, and may say which of its
    fields `run`'s older flat options set (`flat`) and which a repository's files may set (`repository_keys`:
    none unless it says so, since a repository must not send its agent to another engine)."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    type: str

    # `run`'s flat option -> this model's field: `--kube-namespace`, HARNESS_KUBE_NAMESPACE, `kube_namespace = ...`.
    flat: ClassVar[Mapping[str, str]] = {}
    repository_keys: ClassVar[frozenset[str]] = frozenset()

    def reference(self) -> dict[str, object]:
        """The configuration as a session's journal keeps it (camelCase, every field)."""
        return self.model_dump(mode="json", by_alias=True)
