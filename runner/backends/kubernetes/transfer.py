"""The mounts of a spec, moved as tar through the API's exec into a pod's `sync` container and back: never a
hostPath (the cluster may have many nodes, and none holds the user's files).

In: the host directory's entries, packed here by `tar` and unpacked into the pod's volume. Out: the volume
packed in the pod and extracted here with Python's `tar` filter (nothing written outside the new directory,
no member written through a link, no setuid bits) and without devices or fifos, into a new directory that
then takes the place of the old contents.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

from runner.backends.kubernetes.api import run_in_pod
from runner.backends.kubernetes.job import SYNC
from runner.base.errors import BackendError

# How long one direction of one mount may take; also in the Job's own deadline (runner.backends.kubernetes.job).
TRANSFER_ALLOWANCE_SECONDS = 900


def push(
    api: Any, namespace: str, pod: str, source: Path, target: str, *, abort: threading.Event | None = None
) -> None:
    """The contents of the host directory `source` into `target` of the pod's `sync` container."""
    with tempfile.TemporaryDirectory(prefix="harness-k8s-") as tmp:
        archive = Path(tmp) / "in.tar"
        # The entries under `source`, not `source` itself: the volume's own directory is not the
        # agent uid's to chmod or retime.
        names = sorted(entry.name for entry in source.iterdir())
        made = subprocess.run(
            ["tar", "-C", str(source), "--numeric-owner", "--null", "-cf", str(archive), "-T", "-"],
            input="".join(f"{name}\0" for name in names), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode not in (0, 1):  # 1: a file changed as it was read
            raise BackendError(f"packing {source} for the pod: {made.stderr.strip()[-300:]}")
        size = archive.stat().st_size
        # --no-overwrite-dir: the volume's own directory is not the agent uid's to retime or chmod.
        script = 'head -c "$1" | tar -x --no-same-owner --no-overwrite-dir -C "$2" -f -'
        run_in_pod(api, namespace, pod, SYNC, ["sh", "-c", script, "push", str(size), target], stdin=archive,
                   what=f"sending {source} to the pod", timeout=TRANSFER_ALLOWANCE_SECONDS, abort=abort)  # fmt: skip


def pull(api: Any, namespace: str, pod: str, source: str, target: Path) -> None:
    """Make the host directory `target` hold what `source` of the pod's `sync` container holds (the agent's
    files: extracted with `agent_files`, into a new directory, then swapped in)."""
    with tempfile.TemporaryDirectory(prefix="harness-k8s-", dir=target.parent) as tmp:
        archive = Path(tmp) / "out.tar"
        script = 'chmod -R u+rwX "$1" 2>/dev/null; tar -C "$1" -cf - .'
        run_in_pod(api, namespace, pod, SYNC, ["sh", "-c", script, "pull", source], stdout=archive,
                   what=f"collecting {target.name} from the pod", timeout=TRANSFER_ALLOWANCE_SECONDS)  # fmt: skip
        fresh = Path(tmp) / "tree"
        fresh.mkdir()
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(fresh, filter=agent_files)  # noqa: S202 - the filter is the check
        except (tarfile.TarError, OSError) as exc:
            raise BackendError(f"collecting {target.name} from the pod: {exc}") from None
        for old in list(target.iterdir()):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        for new in fresh.iterdir():
            new.rename(target / new.name)


def agent_files(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Python's `tar` filter (no member outside `dest`, none written through a link, no setuid
    bits; a link's target may point anywhere, as in a repository), and no devices or fifos."""
    if member.ischr() or member.isblk() or member.isfifo():
        return None
    return tarfile.tar_filter(member, dest)
