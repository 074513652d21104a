"""What model tokens cost: a built-in table for current models, overridable by the user.

Prices are USD per million tokens. A model matches a row exactly or through one documented alias: a
provider prefix (`anthropic/`, `openai/`) and a release suffix (`-20250929`, `-2025-08-07`, `-latest`)
are dropped. Nothing else matches: a prefix match would price `gpt-5-pro` as `gpt-5`, at a twelfth of
its price. A model that matches nothing is priced at the most expensive row of its provider, so a
budget errs on the safe side, and the request is counted as unpriced.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.base.errors import UsageError
from runner.base.seams import harness_env
from runner.record.models import TokenUsage

log = logging.getLogger(__name__)

PRICES_ENV = "HARNESS_PRICES"  # a TOML file of [models."NAME"] rows; default $XDG_CONFIG_HOME/harness/prices.toml
# The built-in rows: the providers' published list prices on this date (standard tier, not batch).
PRICES_AS_OF = "2025-11-24"
PRICES_SOURCE = "https://docs.anthropic.com/en/docs/about-claude/pricing, https://platform.openai.com/docs/pricing"
_PROVIDER_PREFIX = re.compile(r"^(?:anthropic|openai)/")
_RELEASE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


class Price(BaseModel):
    """USD per million tokens. Cache prices default to the input price when a provider has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)

    def cost(self, usage: TokenUsage) -> float:
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
        )
        return total / 1_000_000

    def worst_case(self, input_tokens: int, output_tokens: int) -> float:
        """The most a request can cost: every input token at the dearest input rate (a cache write
        costs more than plain input), and every output token it may produce."""
        rate = max(self.input, self.cache_read or 0.0, self.cache_write or 0.0)
        return (input_tokens * rate + output_tokens * self.output) / 1_000_000


def _p(i: float, o: float, r: float | None = None, w: float | None = None) -> Price:
    return Price(input=i, output=o, cache_read=r, cache_write=w)


BUILTIN: dict[str, Price] = {
    # Anthropic (cache writes at the 5-minute rate)
    "claude-opus-4-5": _p(5, 25, 0.5, 6.25),
    "claude-opus-4-1": _p(15, 75, 1.5, 18.75),
    "claude-opus-4": _p(15, 75, 1.5, 18.75),
    "claude-sonnet-4-5": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4": _p(3, 15, 0.3, 3.75),
    "claude-3-7-sonnet": _p(3, 15, 0.3, 3.75),
    "claude-haiku-4-5": _p(1, 5, 0.1, 1.25),
    "claude-3-5-haiku": _p(0.8, 4, 0.08, 1),
    # OpenAI (cached input is a read; there is no cache write charge)
    "gpt-5.1-codex-mini": _p(0.25, 2, 0.025),
    "gpt-5.1-codex": _p(1.25, 10, 0.125),
    "gpt-5.1": _p(1.25, 10, 0.125),
    "gpt-5-pro": _p(15, 120),
    "gpt-5-codex": _p(1.25, 10, 0.125),
    "gpt-5-mini": _p(0.25, 2, 0.025),
    "gpt-5-nano": _p(0.05, 0.4, 0.005),
    "gpt-5": _p(1.25, 10, 0.125),
    "gpt-4.1-mini": _p(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _p(0.1, 0.4, 0.025),
    "gpt-4.1": _p(2, 8, 0.5),
    "gpt-4o-mini": _p(0.15, 0.6, 0.075),
    "gpt-4o": _p(2.5, 10, 1.25),
    "o4-mini": _p(1.1, 4.4, 0.275),
    "o3-pro": _p(20, 80),
    "o3": _p(2, 8, 0.5),
}


def canonical_model(model: str | None) -> str:
    """The row name a model is looked up by: lower case, without provider prefix or release suffix."""
    name = _PROVIDER_PREFIX.sub("", (model or "").strip().lower())
    return _RELEASE_SUFFIX.sub("", name)


class PriceTable:
    def __init__(self, rows: dict[str, Price]) -> None:
        self.rows = {key.lower(): price for key, price in rows.items()}

    def lookup(self, model: str | None, provider: str) -> tuple[Price, bool]:
        """(price, known): the row for `model` (exact or alias), or the provider's dearest row."""
        name = (model or "").strip().lower()
        for key in (name, canonical_model(name)):
            if key in self.rows:
                return self.rows[key], True
        return self.dearest(provider), False

    def dearest(self, provider: str) -> Price:
        """The provider's most expensive row: what an unknown model is charged, so a budget errs safe."""
        family = [p for k, p in self.rows.items() if k.startswith("claude") == (provider == "anthropic")]
        return max(family or self.rows.values(), key=lambda p: (p.output, p.input))

    def cost(self, model: str | None, provider: str, usage: TokenUsage) -> tuple[float, bool]:
        price, known = self.lookup(model, provider)
        return price.cost(usage), known


def _user_file() -> Path:
    explicit = harness_env().prices
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "harness" / "prices.toml"


def load_prices(path: Path | None = None) -> PriceTable:
    """The built-in table with the user's rows on top (`[models."NAME"] input = .. output = ..`)."""
    path = path or _user_file()
    rows = dict(BUILTIN)
    if not path.is_file():
        if harness_env().prices:
            raise UsageError(f"{PRICES_ENV}: {path} is not a file")
        return PriceTable(rows)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"price table {path}: {exc}") from None
    models = data.get("models", {})
    unknown = sorted(set(data) - {"models"})
    if unknown or not isinstance(models, dict):
        raise UsageError(f"price table {path}: expected only a [models] table, found {', '.join(unknown) or 'models'}")
    for name, row in models.items():
        try:
            rows[str(name).lower()] = Price.model_validate(row)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UsageError(f"price table {path}: models.{name}.{where}: {err['msg']}") from None
    log.debug("price table: %d built-in rows, %d from %s", len(BUILTIN), len(models), path)
    return PriceTable(rows)
