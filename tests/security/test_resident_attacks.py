"""The resident helper (runner/loop/resident.py): one container per run takes every checkpoint as an exec, and
a checkpoint runs the agent's git filters in it. Nothing they start may outlive the checkpoint, reach the
container's init, or leave state for the next checkpoint.

Row 17 runs it end to end: a clean filter that the checkpoint's `git add` runs leaves a daemon, files in
/tmp and $HOME; the next iteration's agent watches the daemon's heartbeat, the next checkpoint looks for
the files. The tests below it drive the resident helper directly on Docker, with positive controls: an
exec's background process does outlive the exec, and a same-uid process's memory is open to another.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.backends.docker.engine import DockerBackend
from runner.base.output import CappedBuffer
from runner.loop.resident import ResidentHelper
from runner.record.models import Limits
from runner.sandbox.container import bind, hardened_spec, labels
from tests.helpers import GitRepo, containers
from tests.security.conftest import run_agent

pytestmark = pytest.mark.docker

# Iteration 1 plants the filter; every checkpoint then runs it. It first notes what the previous
# checkpoint left (files in /tmp and $HOME, a live daemon), then leaves all of that again.
LEAVE_BEHIND = r"""
cat > .leave.sh <<'EOF'
seen="/workspace/.seen-$HARNESS_ITERATION"  # git may run the filter more than once per checkpoint
[ -e "$seen" ] || ls -A /tmp /home/agent > "$seen" 2>&1
setsid sh -c 'while :; do echo beat >> /workspace/.beats; sleep 0.2; done' </dev/null >/dev/null 2>&1 &
echo left > /tmp/left-in-tmp; echo '[alias] x = !touch /workspace/.alias-ran' > /home/agent/.gitconfig
EOF
if [ "$HARNESS_ITERATION" = 1 ]; then
  git config filter.leave.clean 'sh /workspace/.leave.sh; cat'
  echo '*.txt filter=leave' > .gitattributes
else
  a=$(wc -l < .beats); sleep 2; b=$(wc -l < .beats)
  echo "BEATS $a $b"
  echo "SEEN-BEGIN"; cat ".seen-$((HARNESS_ITERATION - 1))"; echo "SEEN-END"
fi
echo "change $HARNESS_ITERATION" >> data.txt
state=working; [ "$HARNESS_ITERATION" = 3 ] && state=done
echo "{\"state\": \"$state\", \"summary\": \"left things behind\"}" > "$HARNESS_STATUS_FILE"
"""


@pytest.mark.attack(row=17, name="a checkpoint's git filter leaves a daemon and files in the resident helper")
def test_nothing_a_checkpoint_starts_outlives_it(repo: GitRepo, runtime: str) -> None:
    session = f"leave-{runtime}"
    r = run_agent(repo, session, LEAVE_BEHIND, runtime, "--max-iterations", "3", timeout=300)
    assert r.code == 0, r.stderr
    for n in (2, 3):
        log = (repo.journal(session) / f"iteration-{n:04d}.log").read_text()
        beats = re.search(r"^BEATS (\d+) (\d+)$", log, re.MULTILINE)
        assert beats, log
        # Positive control: the daemon ran (it beat at least once, in the checkpoint before this agent).
        assert int(beats.group(1)) >= 1, log
        assert beats.group(1) == beats.group(2), f"the daemon outlived checkpoint {n - 1}: {log}"
        seen = re.search(r"SEEN-BEGIN\n(.*?)SEEN-END", log, re.DOTALL)
        assert seen, log
        # The checkpoint saw an empty /tmp and $HOME: the listing has only the two headers.
        listed = [line for line in seen.group(1).splitlines() if line and not line.endswith(":")]
        assert listed == [], f"checkpoint {n} found what checkpoint {n - 1} left: {seen.group(1)}"
    # The branch has every iteration's change: the checkpoints themselves still worked.
    assert repo.git("show", f"harness/{session}:data.txt").splitlines()[-1] == "change 3"
    # The resident helper went with the run.
    assert containers(f"io.solo-harness.session={session}") == []


def _top(container_id: str) -> list[str]:
    """The container's processes as the host sees them (not as anything inside could claim)."""
    out = subprocess.run(["docker", "top", container_id, "-o", "pid,args"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [line.split(None, 1)[1] for line in out.splitlines()[1:]]


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[ResidentHelper]:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    spec = hardened_spec(
        image="harness-base:latest",
        command=["unused"],
        limits=Limits(),
        mounts=(bind(shared, "/workspace", read_only=False),),
        labels=labels("resident-test", "0" * 12, "helper"),  # with the test run's label (conftest)
        workdir="/tmp",
    )
    made = ResidentHelper(DockerBackend(), spec)
    yield made
    made.close()


def _run(helper: ResidentHelper, script: str) -> tuple[int | None, str]:
    out = CappedBuffer()
    code = helper.run(script, {}, out, timeout=60)
    return code, out.text()


def test_leftover_processes_and_files_are_swept_and_the_container_is_kept(helper: ResidentHelper) -> None:
    assert _run(helper, "true") == (0, "")
    kept = helper.container_id
    assert kept is not None
    assert [args for args in _top(kept) if "python3" not in args] == []

    # Positive control: an exec's background process does outlive the exec (no sweep after a bare exec).
    code = helper.backend.exec(kept, ["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 &"],
                               user=helper.spec.user, env={}, output=CappedBuffer(), timeout=30)  # fmt: skip
    assert code == 0
    assert any("sleep 300" in args for args in _top(kept)), _top(kept)

    code, _ = _run(helper, "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo x > /tmp/left; echo y > ~/.gitconfig")
    assert code == 0
    assert helper.container_id == kept  # swept clean: kept for the next checkpoint
    assert len(_top(kept)) == 1 and "python3" in _top(kept)[0], _top(kept)  # only the init
    assert _run(helper, "ls -A /tmp /home/agent") == (0, "/home/agent:\n\n/tmp:\n")


def test_a_checkpoint_cannot_kill_or_trace_the_init(helper: ResidentHelper) -> None:
    assert _run(helper, "true")[0] == 0
    kept = helper.container_id
    assert kept is not None
    probe = (
        "sleep 30 & sibling=$!; "
        # Positive control: a same-uid process's memory is open to another (no Yama here, ptrace rules).
        "python3 -c \"import sys; open(f'/proc/{sys.argv[1]}/mem', 'rb'); print('sibling-mem-open')\" $sibling; "
        "python3 -c \"open('/proc/1/mem', 'rb')\" 2>&1 | grep -o PermissionError; "
        "for sig in KILL TERM INT HUP QUIT USR1; do kill -s $sig 1; done; kill -9 -1"
    )
    code, out = _run(helper, probe)
    assert "sibling-mem-open" in out, out
    assert "PermissionError" in out, out
    assert code == 0  # `kill -9 -1` spares its caller: the probe's shell ended by itself
    assert helper.container_id == kept, "the init died, or the sweep failed"
    assert _run(helper, "echo still-here") == (0, "still-here\n")


def test_a_helper_removed_from_outside_is_replaced(helper: ResidentHelper) -> None:
    assert _run(helper, "true")[0] == 0
    gone = helper.container_id
    assert gone is not None
    subprocess.run(["docker", "rm", "-f", gone], capture_output=True, check=True)
    assert _run(helper, "echo again") == (0, "again\n")
    assert helper.container_id not in {None, gone}
