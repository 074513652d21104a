"""Whether this machine's engine can mount the overlays that racers' copies are (runner.loop.workspace).

An engine with `Overlays` (Docker) mounts them with its local volume driver, which needs a kernel overlay and a
file system under the harness home that takes one as its upper layer: rootless engines, or a harness home on a
share (Docker Desktop's), may refuse. So before the first copy over a tree, one overlay of the harness home's own
directories is mounted in a helper; the answer is kept in the harness home for this engine, and a copy is made
as a checkout of its own where the engine said no.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

from runner.backends.base import Backend, Mount, Overlays
from runner.backends.watchdog import run_container
from runner.base.atomic import write_atomic
from runner.base.errors import BackendError, HarnessError
from runner.base.output import CappedBuffer
from runner.base.paths import data_home
from runner.record.journal import load_model
from runner.record.models import JournalModel, Limits
from runner.sandbox.container import hardened_spec, labels, session_labels

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 120.0


class OverlayVerdict(JournalModel):
    """What the engine answered when an overlay was mounted under the harness home."""

    engine: str  # the engine's name and version: another engine is asked again
    mountable: bool
    reason: str | None = None  # why not, as the engine said it


def overlay_refusal(backend: Backend, image: str) -> str | None:
    """None when the engine mounts overlays under this harness home; else why not (asked once per engine)."""
    if not isinstance(backend, Overlays):
        return "the engine has no overlays"
    info = backend.check()
    engine = f"{info.name} {info.version}"
    path = data_home() / "seeds" / "overlays.json"
    with contextlib.suppress(HarnessError):
        known = load_model(path, OverlayVerdict)
        if known.engine == engine:
            return None if known.mountable else known.reason
    reason = _mount_one(backend, image)
    if reason is not None:
        log.info("the %s engine cannot mount an overlay under %s: %s", info.name, data_home(), reason)
    with contextlib.suppress(OSError):
        write_atomic(path, OverlayVerdict(engine=engine, mountable=reason is None, reason=reason).dump_json())
    return reason


def _mount_one(backend: Backend, image: str) -> str | None:
    """Mount one overlay of fresh directories under the harness home, read-only, in a container that does
    nothing; the engine's refusal, if it refused."""
    parent = data_home() / "seeds"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    top = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=parent))
    try:
        for name in ("lower", "upper", "work"):
            (top / name).mkdir()
        mount = Mount(source=top / "upper", target="/probe", read_only=True, lower=top / "lower", work=top / "work")
        spec = hardened_spec(image=image, command=["true"], limits=Limits(), mounts=(mount,),
                             labels=labels(_PROBE, _PROBE, "helper"), workdir="/tmp")  # fmt: skip
        try:
            result = run_container(backend, spec, timeout=PROBE_TIMEOUT, output=CappedBuffer())
        except BackendError as exc:
            return exc.message
        if result.failure is not None or result.exit_code != 0:
            return result.failure or f"the probe's container ended with exit {result.exit_code}"
        return None
    finally:
        if isinstance(backend, Overlays):
            with contextlib.suppress(BackendError):
                backend.remove_overlays(session_labels(_PROBE, _PROBE))
        with contextlib.suppress(OSError):
            (top / "work" / "work").rmdir()  # the kernel's (root's), empty once unmounted: rmdir takes it
        shutil.rmtree(top, ignore_errors=True)


_PROBE = "overlay-probe"  # the session and repository labels of the probe's container and volume
