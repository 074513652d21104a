"""Image builds on the Docker engine (its image store): the build log streamed line by line to the log, a
failed build's reason in one line, and a second attempt when a concurrent prune took a cached layer."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from runner.backends.docker.api import translated
from runner.base.errors import BackendError, ImageMissingError

log = logging.getLogger(__name__)

# The classic builder colours a step's stderr; the escape sequences (and any other control
# characters a package's installer prints) are dropped before a line reaches the log.
_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f\x9b]"
)


# A prune that runs while a build uses a cached layer (`harness gc` removes dangling harness
# images, which a multi-stage build's first stage is) makes the engine fail the build midway; a
# second attempt builds the layer again.
_CACHE_RACE = re.compile(r"failed to get digest|no such image|unknown parent image", re.IGNORECASE)
BUILD_ATTEMPTS = 2


class _CacheRace(Exception):
    pass


def _last(lines: list[str]) -> str:
    return lines[-1] if lines else "the engine reported no output"


# What the classic builder prints around a step's own output: not worth quoting in an error.
_BUILDER_LINE = re.compile(r"^(Step \d+/\d+ : |---> |Removing intermediate container |Successfully )")
_QUOTED_MAX = 300


def _failure(detail: str, tail: list[str]) -> str:
    """The engine's error for a failed build, with the last line the failing step printed (the reason,
    usually: "E: Unable to locate package", a refusal), on one line."""
    said = [line for line in tail if not _BUILDER_LINE.match(line)]
    if not detail:
        return _last(said or tail)
    if said and said[-1] not in detail:
        return f"{detail} (last output: {said[-1][:_QUOTED_MAX]})"
    return detail


def build_image(
    client: Any, *, context: Path, tag: str, labels: dict[str, str], dockerfile: str | None = None,
    buildargs: dict[str, str] | None = None, target: str | None = None,
) -> None:  # fmt: skip
    log.info("building image %s from %s", tag, context)
    options: dict[str, Any] = {"dockerfile": dockerfile, "buildargs": buildargs or None, "target": target}
    for attempt in range(1, BUILD_ATTEMPTS + 1):
        try:
            _build(client, context, tag, labels, {k: v for k, v in options.items() if v is not None})
        except _CacheRace as exc:
            if attempt == BUILD_ATTEMPTS:
                raise ImageMissingError(f"building image {tag} failed: {exc}") from None
            log.warning("a cached layer of %s vanished mid-build (%s); building again", tag, exc)
        else:
            return


def _build(client: Any, context: Path, tag: str, labels: dict[str, str], options: dict[str, Any]) -> None:
    progress = logging.getLogger(f"{__name__}.build")
    tail: list[str] = []  # the last lines, for the error of a failed build
    try:
        with translated(f"build image {tag}"):
            # The low-level API streams the build log; each line goes to the log as it comes.
            chunks = client.api.build(
                path=str(context), tag=tag, labels=labels, rm=True, forcerm=True,
                pull=False, network_mode="host", decode=True, **options,
            )  # fmt: skip
            for chunk in chunks:
                if "error" in chunk:
                    detail = _CONTROLS.sub("", str(chunk.get("error") or "")).strip()
                    if _CACHE_RACE.search(detail):
                        raise _CacheRace(detail)
                    raise ImageMissingError(f"building image {tag} failed: {_failure(detail, tail)}")
                for raw in str(chunk.get("stream") or chunk.get("status") or "").splitlines():
                    line = _CONTROLS.sub("", raw).strip()
                    if line:
                        progress.info("%s: %s", tag, line)
                        tail = [*tail[-19:], line]
    except BackendError as exc:
        raise ImageMissingError(f"building image {tag} failed: {exc.message}") from None
