"""Overlay mounts on Docker (runner.backends.base.Overlays): each is a named volume of the local driver whose
options make it an overlay, which the engine (as root) mounts at each container's start and unmounts when the
last container using it ends. The harness needs no privilege for it, and neither does the container."""

from __future__ import annotations

import hashlib

from docker.types import DriverConfig
from docker.types import Mount as DockerMount

from runner.backends.base import Mount, overlay_path
from runner.base.errors import BackendError

OVERLAY_PREFIX = "harness-overlay-"


def overlay_volume(mount: Mount) -> str:
    """The name of the engine's volume for an overlay mount: one per (lower, upper, work), so that a copy
    made again over another checkout never finds the old volume's options."""
    key = "\0".join(str(p) for p in (mount.lower, mount.source, mount.work))
    return OVERLAY_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def _overlay_options(mount: Mount) -> dict[str, str]:
    """The local driver's options that make the volume an overlay, mounted by the engine (as root) at each
    container's start and unmounted when the last container using it ends: no privilege in the container,
    none for the harness."""
    paths = (mount.lower, mount.source, mount.work)
    if any(p is None or not overlay_path(p) for p in paths):
        raise BackendError(f"an overlay's directories must be plain absolute paths: {[str(p) for p in paths]}")
    return {"type": "overlay", "device": "overlay",
            "o": f"lowerdir={mount.lower},upperdir={mount.source},workdir={mount.work}"}  # fmt: skip


def docker_mount(m: Mount, labels: dict[str, str]) -> DockerMount:
    """A spec's mount as the engine takes it: a bind, or an overlay's volume (made at the container's creation
    when it does not exist yet, with `labels`)."""
    if m.lower is None:
        return DockerMount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
    return DockerMount(
        target=m.target, source=overlay_volume(m), type="volume", read_only=m.read_only, labels=labels,
        driver_config=DriverConfig("local", _overlay_options(m)),
    )  # fmt: skip


def submitted_mount(m: Mount) -> dict[str, object]:
    """The same, as JSON data (`run --dry-run`)."""
    mount: dict[str, object] = {"type": "bind", "source": str(m.source), "target": m.target, "readOnly": m.read_only}
    if m.lower is not None:
        mount.update(type="volume", source=overlay_volume(m), overlay=_overlay_options(m))
    return mount
