"""The Docker engine's API as the engine uses it: every SDK and transport error translated into the harness's own
at this boundary, and transient ones (connection reset, daemon restarting, 5xx) retried with the one policy of
runner.backends.retry, bounded in attempts and time. Agent commands are never retried."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import docker.errors
import requests.exceptions

from runner.backends.retry import retry_transient
from runner.base.errors import (
    BackendError,
    EngineUnavailableError,
    HarnessError,
    ImageMissingError,
    TransientBackendError,
)

T = TypeVar("T")

# How the engine says that a volume does not mount (at a container's creation, or at its start).
_NO_MOUNT = ("error while mounting volume", "failed to mount local volume")
API_TIMEOUT = 60  # seconds for one engine API call (not for waiting on a container)


def translate(exc: Exception, what: str) -> HarnessError:
    """Map an SDK or transport error to the harness's own exceptions."""
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageMissingError(f"{what}: image not found ({exc.explanation})")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        message = f"{what}: Docker engine error {status}: {exc.explanation or exc}"
        # A volume that does not mount (an overlay the engine refuses) fails the same way each time: not retried.
        transient = status >= 500 and not any(says in str(exc.explanation or "") for says in _NO_MOUNT)
        return TransientBackendError(message) if transient else BackendError(message)
    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | OSError):
        return TransientBackendError(f"{what}: lost the Docker engine ({exc.__class__.__name__})")
    if isinstance(exc, docker.errors.DockerException):
        return EngineUnavailableError(f"{what}: {exc}")
    return BackendError(f"{what}: {exc}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except HarnessError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise translate(exc, what) from None


def call(what: str, fn: Callable[[], T]) -> T:
    """Run one engine call with translation and bounded retries of transient faults."""

    @retry_transient
    def attempt() -> T:
        with translated(what):
            return fn()

    return attempt()
