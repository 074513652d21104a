"""Container backends. The supervisor sees only `runner.backends.base.Backend`."""

from __future__ import annotations

from runner.backends.base import Backend


def default_backend() -> Backend:
    """The Docker backend (the SDK is imported only here, when a command needs an engine)."""
    from runner.backends.docker import DockerBackend

    return DockerBackend()
