"""The engines: container backends behind one interface, split by capability (`runner.backends.base`).

An engine knows nothing of runs: it may import `runner.record` and `runner.base` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.backends.base import Backend
from runner.record.models import BackendConfig

if TYPE_CHECKING:
    from runner.backends.docker import DockerBackend


def default_backend() -> DockerBackend:
    """The Docker backend (the SDK is imported only here, when a command needs an engine)."""
    from runner.backends.docker import DockerBackend

    return DockerBackend()


def backend_for(config: BackendConfig) -> Backend:
    """The backend a session was created with (each engine's client is imported only when used)."""
    if config.type == "kubernetes":
        from runner.backends.kubernetes.engine import KubernetesBackend

        return KubernetesBackend(config)
    from runner.backends.docker import DockerBackend

    return DockerBackend()
