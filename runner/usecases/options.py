"""What `run` and `resume` both take from the user: the limits as typed, the `--env` names (whose values
stay in the harness's environment) and commands that must not be empty."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pydantic import ValidationError

from runner.base.errors import UsageError
from runner.base.limits import parse_duration, parse_size
from runner.base.redact import MIN_SECRET_LENGTH
from runner.gateway.credentials import SOURCES
from runner.record.layers import cli_option
from runner.record.models import Limits
from runner.record.settings import choice_problem


@dataclass(frozen=True)
class LimitOptions:
    """Limit options as the user typed them (None: keep the default or the session's value)."""

    cpus: float | None = None
    memory: str | None = None
    pids: int | None = None
    iteration_timeout: str | None = None
    max_time: str | None = None
    max_disk: str | None = None
    stuck_after: int | None = None
    backoff_base: str | None = None
    max_cost: float | None = None  # USD
    max_tokens: int | None = None
    wait_on_limit: str | None = None  # a duration; "0": never wait

    def apply(self, base: Limits) -> Limits:
        update: dict[str, object] = {}
        if self.cpus is not None:
            update["cpus"] = self.cpus
        if self.memory is not None:
            update["memory_bytes"] = parse_size(self.memory, option="--memory")
        if self.pids is not None:
            update["pids"] = self.pids
        if self.iteration_timeout is not None:
            update["iteration_timeout_seconds"] = parse_duration(self.iteration_timeout, option="--iteration-timeout")
        if self.max_time is not None:
            update["max_time_seconds"] = parse_duration(self.max_time, option="--max-time")
        if self.backoff_base is not None:
            update["backoff_base_seconds"] = parse_duration(self.backoff_base, option="--backoff-base")
        if self.stuck_after is not None:
            update["stuck_after"] = self.stuck_after
        if self.max_disk is not None:
            update["max_disk_bytes"] = parse_size(self.max_disk, option="--max-disk")
        if self.max_cost is not None:
            if not self.max_cost > 0 or self.max_cost != self.max_cost:
                raise UsageError("--max-cost must be a positive number of US dollars")
            update["max_cost_usd"] = self.max_cost
        if self.max_tokens is not None:
            if self.max_tokens < 1:
                raise UsageError("--max-tokens must be a positive number of tokens")
            update["max_tokens"] = self.max_tokens
        if self.wait_on_limit is not None:
            never = self.wait_on_limit.strip() in {"0", "0s"}
            update["wait_on_limit_seconds"] = (
                0.0 if never else parse_duration(self.wait_on_limit, option="--wait-on-limit")
            )
        try:
            return Limits.model_validate({**base.model_dump(), **update})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UsageError(f"invalid limit {err['loc'][0]}: {err['msg']}") from None


def check_command(command: str | None, *, option: str) -> str | None:
    """A command given with `option` (`--check`, `--setup`); an empty one is refused."""
    if command is not None and not command.strip():
        raise UsageError(f"{option}: the command is empty")
    return command


def check_iterations(iterations: int) -> int:
    """`--max-iterations` of `run` (iterations in all) and of `resume` (iterations to add)."""
    if iterations < 1:
        raise UsageError("--max-iterations must be at least 1")
    return iterations


def check_choice(option: str, value: str) -> None:
    """`--runtime` or `--network` of a request not made from the settings (which check them as they are read)."""
    problem = choice_problem(option, value)
    if problem is not None:
        raise UsageError(f"{cli_option(option)}: {problem}")


# Never into a container: the gateway holds them (an SDK's own base URL and placeholder key are set instead).
GATEWAY_KEYS = frozenset(source.variable for sources in SOURCES.values() for source in sources)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def secret_values(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The values of the `--env` variables, from the harness's own environment."""
    values = {}
    for name in names:
        if not _ENV_NAME.fullmatch(name) or name.startswith("HARNESS_"):
            raise UsageError(f"--env: {name!r} is not a variable name the harness passes on")
        if name in GATEWAY_KEYS:
            raise UsageError(
                f"--env {name}: model API keys stay on the host; the model gateway adds them to each request "
                "(leave it set in this environment and drop --env)"
            )
        value = os.environ.get(name)
        if value is None:
            raise UsageError(f"--env {name}: the variable is not set in this environment")
        if len(value.encode()) < MIN_SECRET_LENGTH:
            raise UsageError(f"--env {name}: the value is too short to be redacted reliably")
        values[name] = value
    return values
