"""The Docker engine's configuration: nothing to choose, the local engine as the environment names it
(DOCKER_HOST, else its socket)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from runner.backends.config import EngineConfig


class DockerConfig(EngineConfig):
    """Containers on the local Docker engine (the default)."""

    type: Literal["docker"] = Field(default="docker", description="Always `docker`.")
