"""Attack row 0: the container posture of design §4 rule 4, seen by the engine and from inside.

The first test catches a real agent container while it runs and checks every hardening item in
`docker inspect`; the second asks the kernel (or gVisor's Sentry) from inside the container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HARNESS, HOLD, GitRepo, release, run_args
from tests.security.conftest import iteration, run_agent

pytestmark = pytest.mark.docker

AGENT_UID = "10001"
# The agent runs until the test has inspected its container (a fixed sleep was 20 s, or too short).
SLEEPER = f'{HOLD}\nprintf \'{{"state": "done", "summary": "slept"}}\' > "$HARNESS_STATUS_FILE"\n'


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def _session_containers(session: str, *, role: str | None = None, running_only: bool = False) -> list[str]:
    filters = [f"label=io.solo-harness.session={session}", f"label=io.solo-harness.test={TEST_RUN_LABEL}"]
    if role:
        filters.append(f"label=io.solo-harness.role={role}")
    args = ["ps", "-q"] if running_only else ["ps", "-aq"]
    for f in filters:
        args += ["--filter", f]
    return _docker(*args).split()


def _under(path: str, parent: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(parent.resolve())


@pytest.mark.attack(row=0, name="container posture in docker inspect")
def test_agent_container_posture_in_docker_inspect(repo: GitRepo, runtime: str, tmp_path: Path) -> None:
    session = f"posture-{runtime}-{uuid.uuid4().hex[:8]}"
    args = [*HARNESS, *run_args(session, "--runtime", runtime, "--iteration-timeout", "2m", cmd=SLEEPER,
                                objective="posture", iterations=1)]  # fmt: skip
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(args, cwd=repo.path, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        # Catch the agent container while the agent sleeps.
        found: list[str] = []
        deadline = time.monotonic() + 40
        while not found and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its agent container was seen: {err.read_text()}")
            found = _session_containers(session, role="agent", running_only=True)
            if not found:
                time.sleep(0.5)
        assert len(found) == 1, f"no running agent container for {session} within 40 s: {err.read_text()}"
        info: dict[str, Any] = json.loads(_docker("inspect", found[0]))[0]

        config, host = info["Config"], info["HostConfig"]
        # Non-root, and not the host user's uid.
        assert config["User"] == f"{AGENT_UID}:{AGENT_UID}", config["User"]
        assert config["User"].split(":")[0] != str(os.getuid())
        # No capabilities, no privilege gain, the default seccomp profile.
        assert host["CapDrop"] == ["ALL"], host["CapDrop"]
        assert not host["CapAdd"], host["CapAdd"]
        security = host["SecurityOpt"] or []
        assert any(re.fullmatch(r"no-new-privileges(:true|=true)?", opt) for opt in security), security
        assert not any("unconfined" in opt for opt in security), security
        assert host["Privileged"] is False
        # Read-only root, size-capped tmpfs for /tmp and the home directory.
        assert host["ReadonlyRootfs"] is True
        tmpfs = host["Tmpfs"] or {}
        for target in ("/tmp", "/home/agent"):
            assert target in tmpfs, tmpfs
            assert re.search(r"(^|,)size=\d+[kmg]?($|,)", tmpfs[target]), (target, tmpfs[target])
        # Processes, memory without swap, CPU.
        assert (host["PidsLimit"] or 0) > 0, host["PidsLimit"]
        assert host["Memory"] > 0
        assert host["MemorySwap"] == host["Memory"], (host["MemorySwap"], host["Memory"])
        assert host["NanoCpus"] > 0
        # An init process, capped logs.
        assert host["Init"] is True
        assert host["LogConfig"]["Type"] == "json-file", host["LogConfig"]
        assert (host["LogConfig"].get("Config") or {}).get("max-size"), host["LogConfig"]
        # No device, no Docker socket, no network, the runtime asked for.
        assert not host["Devices"], host["Devices"]
        assert not host.get("DeviceRequests"), host.get("DeviceRequests")
        mounts = info["Mounts"] or []
        binds = host.get("Binds") or []
        assert not any("docker.sock" in (m.get("Source", "") + m.get("Destination", "")) for m in mounts), mounts
        assert not any("docker.sock" in b for b in binds), binds
        assert host["NetworkMode"] == "none", host["NetworkMode"]
        assert host["Runtime"] == runtime, host["Runtime"]
        # Never the user's .git (nor anything else of the user's repository).
        user_git = repo.path / ".git"
        for m in mounts:
            assert not _under(m["Source"], user_git), m
            assert not _under(m["Source"], repo.path), m
        assert {m["Destination"] for m in mounts} >= {"/workspace", "/harness", "/harness-out"}, mounts
        assert {m["Destination"]: m["RW"] for m in mounts}["/harness"] is False, mounts

        # Inspected: the agent may end. The run then ends by itself and leaves no container of the session behind.
        release(repo, session)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not end within 90 s of being inspected: {err.read_text()}")
        assert code == 0, err.read_text()
        assert json.loads(out.read_text())["status"] == "completed"
        assert _session_containers(session) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


# Every line is labelled so the assertions can tell which probe said what.
PROC_PROBE = r"""
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
python3 -c 'import ctypes; print("prctl-no-new-privs:", ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'
echo "uid=$(id -u) gid=$(id -g)"
if touch /root-write-probe 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
if touch /tmp/tmp-write-probe 2>/dev/null; then echo "tmp: writable"; else echo "tmp: read-only"; fi
if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then echo "docker.sock: present"
else echo "docker.sock: absent"; fi
printf '{"state": "done", "summary": "probed"}' > "$HARNESS_STATUS_FILE"
"""


def _status_field(log: str, name: str, *, required: bool = True) -> str | None:
    found = re.findall(rf"^{name}:\s*(\S+)\s*$", log, re.MULTILINE)
    assert len(found) == (1 if required else len(found[:1])), (name, log)
    return found[0] if found else None


@pytest.mark.attack(row=0, name="posture seen from inside (/proc/self/status)")
def test_posture_seen_from_inside(repo: GitRepo, runtime: str) -> None:
    session = f"inside-{runtime}"
    r = run_agent(repo, session, PROC_PROBE, runtime, "--iteration-timeout", "2m", timeout=120)
    assert r.code == 0, r.stderr
    assert iteration(repo, session)["outcome"] == "done"
    log = (repo.journal(session) / "iteration-0001.log").read_text()

    for cap in ("CapEff", "CapPrm", "CapInh", "CapBnd"):
        assert int(_status_field(log, cap) or "x", 16) == 0, (cap, log)
    assert int(_status_field(log, "CapAmb", required=(runtime == "runc")) or "0", 16) == 0, log
    # gVisor's /proc/self/status has no NoNewPrivs line: ask prctl(PR_GET_NO_NEW_PRIVS), under both runtimes.
    assert _status_field(log, "prctl-no-new-privs") == "1", log
    assert _status_field(log, "NoNewPrivs", required=(runtime == "runc")) in (
        {"1"} if runtime == "runc" else {"1", None}
    )
    # runc: the kernel's seccomp filter (mode 2). gVisor is itself the syscall filter (design §6):
    # its Sentry reports mode 0 for the sandboxed process.
    assert _status_field(log, "Seccomp") == ("2" if runtime == "runc" else "0"), log

    assert f"uid={AGENT_UID} gid={AGENT_UID}" in log, log
    assert "rootfs: read-only" in log, log
    assert "tmp: writable" in log, log  # positive control: the write probe can succeed
    assert "docker.sock: absent" in log, log
