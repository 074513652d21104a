"""Overlay mounts as each engine takes them (runner.backends.docker.overlay, the Kubernetes Job): Docker makes a
named volume of the local driver whose options are the overlay's, one name per (lower, upper, work); a path that
mount(2) would split is refused; Kubernetes, which has no overlays, refuses the spec rather than mount a copy
without its lower layer. The copy's layout (runner.loop.workspace.RunDir) asks for one only over a tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.base import Mount, overlay_path
from runner.backends.docker.engine import DockerBackend
from runner.backends.docker.overlay import docker_mount, overlay_volume, submitted_mount
from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.job import job_manifest
from runner.base.errors import BackendError
from runner.base.layout import SEED_DIR, WORKSPACE
from runner.loop.workspace import RunDir
from runner.record.models import Limits
from runner.sandbox.container import hardened_spec

TREE = Path("/home/u/.local/share/harness/seeds/k.trees/c0ffee")


def _overlay(**paths: Path) -> Mount:
    base = {"source": Path("/h/runs/k-s/workspace"), "lower": TREE, "work": Path("/h/runs/k-s/overlay-work")}
    return Mount(target=WORKSPACE, read_only=False, **(base | paths))  # type: ignore[arg-type]


def test_docker_mounts_an_overlay_as_a_volume_named_by_its_three_directories() -> None:
    m = _overlay()
    mount = docker_mount(m, {"io.solo-harness.session": "s"})
    assert mount["Type"] == "volume" and mount["Target"] == WORKSPACE and mount["Source"] == overlay_volume(m)
    options = mount["VolumeOptions"]["DriverConfig"]
    assert options["Name"] == "local"
    assert options["Options"] == {
        "type": "overlay", "device": "overlay",
        "o": f"lowerdir={TREE},upperdir=/h/runs/k-s/workspace,workdir=/h/runs/k-s/overlay-work",
    }  # fmt: skip
    assert mount["VolumeOptions"]["Labels"] == {"io.solo-harness.session": "s"}
    # Another tree (the base moved) is another volume: an old one's options are never reused.
    assert overlay_volume(_overlay(lower=TREE.with_name("beef"))) != overlay_volume(m)
    assert submitted_mount(m)["overlay"] == options["Options"]
    plain = docker_mount(Mount(source=Path("/x"), target="/y", read_only=True), {})
    assert plain["Type"] == "bind" and plain["ReadOnly"] is True


@pytest.mark.parametrize("bad", ["/h/with,comma", "/h/with:colon", "/h/with space", "relative/path"])
def test_a_path_mount_would_split_is_refused(bad: str) -> None:
    assert not overlay_path(Path(bad))
    with pytest.raises(BackendError, match="plain absolute paths"):
        docker_mount(_overlay(lower=Path(bad)), {})


def test_the_copy_is_an_overlay_only_over_a_tree_and_so_is_its_place_in_the_run_directory() -> None:
    root = Path("/h/runs/k-s")
    own = RunDir(root, seed=Path("/h/seeds/k"))
    assert [m.lower for m in own.copy_mounts(read_only=False)] == [None, None]
    over = RunDir(root, seed=Path("/h/seeds/k"), lower=TREE)
    copy, seed = over.copy_mounts(read_only=True)
    assert (copy.source, copy.lower, copy.work, copy.read_only) == (root / "workspace", TREE, root / "overlay-work",
                                                                     True)  # fmt: skip
    assert seed.target == SEED_DIR and seed.read_only and seed.lower is None
    # A helper that works beside the copy sees the same copy under /run-root.
    assert [(m.target, m.lower) for m in over.root_mounts()] == [("/run-root", None), ("/run-root/workspace", TREE)]
    assert [m.target for m in own.root_mounts()] == ["/run-root"]


def test_kubernetes_refuses_an_overlay_it_cannot_mount() -> None:
    spec = hardened_spec(image="harness-base:latest", command=["true"], limits=Limits(), mounts=(_overlay(),),
                         labels={})  # fmt: skip
    config = KubernetesConfig(kubeconfig="/k", context="lab", namespace="agents")
    with pytest.raises(BackendError, match="no overlay mounts"):
        job_manifest(spec, "harness-c-1", namespace="agents", config=config, transfer_allowance=60)


def test_docker_has_overlays_and_kubernetes_does_not() -> None:
    from runner.backends.base import Overlays
    from runner.backends.kubernetes.engine import KubernetesBackend

    assert issubclass(DockerBackend, Overlays) and not issubclass(KubernetesBackend, Overlays)


def test_a_volume_the_engine_cannot_mount_is_no_fault_to_retry() -> None:
    """Docker answers 500 for a volume that does not mount; it fails the same way again, unlike a 500 of a
    daemon that is restarting."""
    import docker.errors

    from runner.backends.docker.api import translate
    from runner.base.errors import TransientBackendError

    def answer(explanation: str) -> docker.errors.APIError:
        response = type("Response", (), {"status_code": 500, "reason": "Internal Server Error"})()
        return docker.errors.APIError("start", response=response, explanation=explanation)  # type: ignore[arg-type]

    refused = translate(answer("error while mounting volume '/var/lib/docker/volumes/x/_data': invalid argument"),
                        "start a container")  # fmt: skip
    assert isinstance(refused, BackendError) and not isinstance(refused, TransientBackendError)
    at_create = translate(answer("failed to mount local volume: mount overlay: invalid argument"), "create")
    assert not isinstance(at_create, TransientBackendError)
    assert isinstance(translate(answer("daemon is restarting"), "start a container"), TransientBackendError)
