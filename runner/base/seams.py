"""The harness's own seams: environment variables read at the moment they are needed (tests point them
at temp dirs). Plain `os.environ`, no pydantic-settings: `runner.base.paths` needs two of them, and `harness
status --json` must not pay pydantic-settings' import (about 40 ms here) to learn where the journal is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "HARNESS_"


def _seam(description: str, default: str | None = None) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class HarnessEnv:
    """`HARNESS_` and the field's name in capitals; unset leaves the default, set-but-empty is kept as ''."""

    home: str | None = _seam(
        "The harness's data directory: isolated copies, gateway sockets (default: $XDG_DATA_HOME/harness)."
    )
    journal_root: str | None = _seam(
        "Directory holding every session's journal, instead of <repo>/memory/context-db/sessions."
    )
    container_labels: str = _seam(
        "Extra labels `k=v,k2=v2` put on every container the harness creates (accounting, reaping).", ""
    )
    extra_ca_certs: str | None = _seam(
        "More CA certificate files (separated by ':') copied into image builds, "
        "besides those in /usr/local/share/ca-certificates."
    )
    prices: str | None = _seam("The user's price table (default: $XDG_CONFIG_HOME/harness/prices.toml).")
    debug: str | None = _seam("Set to 1: an internal error shows its traceback.")
    gateway_max_connections: str | None = _seam(
        "Connections the model gateway holds open at once (default 192); past it a new one gets a 503."
    )


SEAMS = tuple(f.name for f in fields(HarnessEnv))


def harness_env() -> HarnessEnv:
    """The seams as the environment holds them now (read on every call: tests change them)."""
    given = {name: os.environ[ENV_PREFIX + name.upper()] for name in SEAMS if ENV_PREFIX + name.upper() in os.environ}
    return HarnessEnv(**given)
