"""The session's resident helper: one container kept for the whole run, so that each checkpoint is an
exec in it rather than a container start (a start is most of an iteration's floor: docs/performance.md).

Design §4 item 2 still holds: the checkpoint runs after the agent's container stopped, as the agent uid
in a sandbox hardened like the agent's, and the host reads only the bundle it writes. What is new is a
container that outlives one checkpoint while a checkpoint runs code the agent wrote (its git filters).
So between checkpoints the container holds nothing but its init:

- the init is our own reaper (`_INIT`), pid 1 of the container's pid namespace: `kill -9 -1` from
  inside cannot reach it, signals it has no handler for are dropped, and it makes itself non-dumpable,
  so nothing a checkpoint runs can ptrace it or write its memory;
- after every checkpoint a second exec (`_SWEEP`) kills every other process until /proc shows only the
  init and itself, and empties the scratch directories (a git config in $HOME would outlive it);
- if the sweep does not end clean, or anything fails, the container is removed: the next checkpoint
  starts a fresh one. The run removes it at its end; `gc` and `resume` reap it after a crash (labels).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from runner.backends.base import Backend, ContainerSpec, Exec
from runner.base.errors import BackendError, HarnessError
from runner.base.layout import HOME
from runner.base.output import CappedBuffer, OutputSink

log = logging.getLogger(__name__)

SWEEP_TIMEOUT = 30.0

# Reaps every child (orphans of the checkpoints' processes are re-parented to it) and does nothing else.
# No signal has a handler: sent from inside, to the namespace's init, they are all dropped (the engine
# removes the container with a SIGKILL from the host).
_INIT = """
import ctypes, os, signal
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's own handler would let a checkpoint end it
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigwaitinfo({signal.SIGCHLD})
"""

# As the agent uid: every process but pid 1 and this shell is the agent's (or the checkpoint's, which
# ran the agent's git config). /proc also lists the killed ones until the init has reaped them; after
# the first tries the loop sleeps a little, so that on a loaded machine the init gets the CPU to reap
# them (a loop that only spins starved it: the sweep then failed and the container was replaced).
_SWEEP = f"""
n=0
while [ $n -lt 600 ]; do
  [ $n -lt 100 ] || sleep 0.02
  kill -9 -1 2>/dev/null
  left=0
  for p in /proc/[0-9]*; do left=$((left + 1)); done
  if [ $left -le 2 ]; then
    find /tmp {HOME} -mindepth 1 -delete 2>/dev/null
    find /tmp {HOME} -mindepth 1 | grep -q . && exit 3
    echo harness-swept; exit 0
  fi
  n=$((n + 1))
done
exit 2
"""


class ResidentHelper:
    """A helper container started at its first use and reused while each use ends clean."""

    def __init__(self, backend: Backend, spec: ContainerSpec) -> None:
        if not isinstance(backend, Exec):
            raise BackendError(f"the {backend.name} backend cannot run a command in a running container")
        self.backend: Backend = backend
        self._exec: Exec = backend
        self.spec = replace(spec, command=["python3", "-c", _INIT], posture=replace(spec.posture, init=False))
        self.container_id: str | None = None

    def run(self, script: str, env: dict[str, str], output: OutputSink, timeout: float) -> int | None:
        """`sh -c script` as an exec: its exit code, or None when it outlived `timeout`. Afterwards the
        container holds only its init, or it is gone."""
        fresh = self.container_id is None
        container_id = self.container_id or self._start()
        try:
            code = self._exec.exec(
                container_id, ["sh", "-c", script], user=self.spec.user, env=env, output=output, timeout=timeout
            )
        except BackendError:
            self.close()
            if fresh:
                raise
            # The kept container is gone or broken (removed by hand, its init killed from the host): once more
            # in a new one.
            return self.run(script, env, output, timeout)
        except BaseException:
            self.close()
            raise
        if code is None or not self._swept(container_id):
            self.close()
        return code

    def _start(self) -> str:
        self.container_id = self.backend.start(self.spec, CappedBuffer(4096))
        return self.container_id

    def _swept(self, container_id: str) -> bool:
        out = CappedBuffer(4096)
        try:
            code = self._exec.exec(
                container_id, ["sh", "-c", _SWEEP], user=self.spec.user, env={}, output=out, timeout=SWEEP_TIMEOUT
            )
        except HarnessError as exc:
            log.warning("resident helper: the sweep failed (%s); a new container for the next checkpoint", exc.message)
            return False
        if code != 0:
            log.warning("resident helper: the sweep ended %s; a new container for the next checkpoint", code)
        return code == 0

    def close(self) -> None:
        """Remove the container (and everything still running in it). Idempotent."""
        container_id, self.container_id = self.container_id, None
        if container_id is not None:
            self.backend.remove_or_leave(container_id)
