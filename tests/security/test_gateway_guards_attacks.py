"""Attack rows 18-21: the model gateway attacked by the agent it serves, from inside a real container,
along the agent's own paths (the relay's loopback port and the gateway's socket itself).

Row 18: reach other provider endpoints with the user's key (path and encoding tricks). Positive control:
the exact routes do reach the upstream, with the key.
Row 19: pass --max-cost with many expensive requests at once. Positive control: without a budget the same
burst reaches the upstream concurrently.
Row 20: get the key back from an upstream that echoes request headers. Positive control: the echo works
(what the agent sent comes back, and the upstream did receive the key).
Row 21: flood the gateway's socket with connections. Positive control: with the cap lifted, the same
flood holds a descriptor in the supervisor per connection. With it, connections past the cap wait in the
socket's backlog, unaccepted, and the supervisor's descriptors stay bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from runner.gateway.loop import ServerThread
from tests.helpers import HARNESS, GitRepo, Result, run_args, wait_for
from tests.security.conftest import journal_text, run_agent

pytestmark = pytest.mark.docker

KEY = "sk-ant-ROW18-real-key-9c8b7a6f5e4d3c2b"
ROW18 = pytest.mark.attack(row=18, name="reach other provider endpoints through the gateway (path tricks)")
ROW19 = pytest.mark.attack(row=19, name="pass --max-cost with a burst of expensive requests")
ROW20 = pytest.mark.attack(row=20, name="get the key back from an upstream that echoes headers")
ROW21 = pytest.mark.attack(row=21, name="flood the gateway's socket with connections")


@dataclass
class Upstream:
    """A loopback stand-in for the provider: records every request as it arrived, echoes headers back
    (in its headers and in an SSE body whose chunks split the values), and can hold requests."""

    hold_until: int = 0  # hold each request until this many are in at once (or HOLD_SECONDS pass)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (method, raw target, headers)
    in_flight: int = 0
    peak: int = 0
    url: str = ""
    _arrived: asyncio.Event | None = None

    HOLD_SECONDS = 3.0

    def reset(self) -> None:
        self.seen.clear()
        self.peak = 0
        self._arrived = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path, dict(request.headers)))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.hold_until:
                if self._arrived is None:
                    self._arrived = asyncio.Event()
                if self.in_flight >= self.hold_until:
                    self._arrived.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self.HOLD_SECONDS)
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        echo = json.dumps(dict(request.headers))
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-echo": echo})
        await response.prepare(request)
        usage = {"input_tokens": 100, "output_tokens": 1000}
        start = {"type": "message_start", "message": {"model": "claude-opus-4-1", "usage": {"input_tokens": 100}}}
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": echo}}
        events = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (start, delta))
        events += b"data: " + json.dumps({"type": "message_delta", "usage": usage}).encode() + b"\n\n"
        at = events.find(KEY.encode())
        cuts = [at + 5, at + 17] if at >= 0 else [len(events) // 2]
        for begin, end in zip([0, *cuts], [*cuts, len(events)], strict=True):  # the key spans three writes
            await response.write(events[begin:end])
        await response.write_eof()
        return response


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    with ServerThread("row18-upstream") as thread:

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", up.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        runner = thread.call(start())
        up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield up
        finally:
            thread.call(runner.cleanup())


def _commit(repo: GitRepo, name: str, text: str) -> None:
    (repo.path / name).write_text(text)
    repo.git("add", name)
    repo.git("commit", "-q", "-m", name)


def _run(repo: GitRepo, session: str, script: str, runtime: str, up: Upstream, *extra: str,
         env: dict[str, str] | None = None) -> Result:  # fmt: skip
    os.environ.update({"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY, **(env or {})})
    try:
        return run_agent(repo, session, script, runtime, *extra)
    finally:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", *(env or {})):
            os.environ.pop(name, None)


# ---- row 18: routes ---------------------------------------------------------------------------------

ESCAPES = [
    "/v1/files", "/v1/files/file_1/content", "/v1/batches/b_1/results", "/v1/responses/resp_1",
    "/v1/models/../files", "/v1/models/%2e%2e/files", "/v1/models/%2E%2E%2Ffiles", "/v1/models/x%3Flimit=1",
    "/v1/models/x%23", "/v1/models/x/../../files", "/v1/models/", "/v1/models/..", "//v1/models",
    "/v1/models?x=1", "/v1/models?limit=1%26after_id=../files", "/v1/messages/../files", "/v1/messages%2f..",
    "/v1/../files", "/files", "/v1/models/a%2fb", "/v1/models;x", "/v1/organizations/me",
]  # fmt: skip
CONTROLS = ["/v1/models?limit=2", "/v1/models/claude-opus-4-1"]

ROUTES_PROBE = r"""
import json, os, socket, sys
targets = json.loads(sys.argv[1])
def ask(connect, target):
    s = connect()
    s.settimeout(30)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nx-api-key: placeholder\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return [int(head.split()[1]), "x-harness-gateway: unknown-path" in head.lower()]
relay = lambda: socket.create_connection(("127.0.0.1", int(os.environ["ANTHROPIC_BASE_URL"].rsplit(":", 1)[1])))
def direct():
    s = socket.socket(socket.AF_UNIX)
    s.connect("/harness-net/gateway.sock")
    return s
out = {f"{via} {t}": ask(connect, t) for via, connect in (("relay", relay), ("socket", direct)) for t in targets}
open("routes.json", "w").write(json.dumps(out))
json.dump({"state": "done", "summary": "probed"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


@ROW18
def test_the_agent_cannot_reach_other_provider_endpoints(repo: GitRepo, runtime: str, upstream: Upstream) -> None:
    _commit(repo, "probe.py", ROUTES_PROBE)
    targets = ESCAPES + CONTROLS
    r = _run(repo, "routes", f"python3 probe.py '{json.dumps(targets)}'", runtime, upstream)
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    got = json.loads(repo.git("show", "harness/routes:routes.json"))
    for via in ("relay", "socket"):
        assert {t: got[f"{via} {t}"] for t in ESCAPES} == {t: [404, True] for t in ESCAPES}
        # The positive control: the exact routes pass, both ways in.
        assert all(got[f"{via} {t}"] == [200, False] for t in CONTROLS)
    # Host side: the provider saw exactly the control requests, with the real key, and nothing else.
    assert sorted(target for _, target, _ in upstream.seen) == sorted(CONTROLS * 2)
    assert all(headers["x-api-key"] == KEY for _, _, headers in upstream.seen)
    log = [json.loads(line) for line in (repo.journal("routes") / "gateway.log").read_text().splitlines()]
    assert sum(line.get("refused") == "unknown-path" for line in log) == 2 * len(ESCAPES)


# ---- row 19: the budget -----------------------------------------------------------------------------

BURST_PROBE = r"""
import json, os, threading, urllib.request, urllib.error
base, statuses = os.environ["ANTHROPIC_BASE_URL"], []
body = json.dumps({"model": "claude-opus-4-1", "max_tokens": 1000, "stream": True,
                   "messages": [{"role": "user", "content": "x"}]}).encode()
def one():
    req = urllib.request.Request(base + "/v1/messages", data=body, method="POST",
                                 headers={"x-api-key": "p", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            statuses.append(r.status)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
    except Exception as exc:
        statuses.append(str(exc))
threads = [threading.Thread(target=one) for _ in range(41)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("BURST", json.dumps(sorted(map(str, statuses))), flush=True)
json.dump({"state": "done", "summary": "burst"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""
# What one request of the burst costs (claude-opus-4-1: $15 in, $75 out per million) and may cost at most.
COST = (100 * 15 + 1000 * 75) / 1e6


@ROW19
def test_a_burst_of_expensive_requests_does_not_pass_the_budget(repo: GitRepo, upstream: Upstream) -> None:
    _commit(repo, "burst.py", BURST_PROBE)
    upstream.hold_until = 10  # held until ten are in at once: only the control's burst gets there
    control = _run(repo, "burst-free", "python3 burst.py", "runc", upstream)
    assert control.code == 0 and control.json()["status"] == "completed", control.stderr
    assert len(upstream.seen) == 41 and upstream.peak >= 10  # the trap: the burst is truly concurrent
    upstream.reset()
    cap = 2.2 * COST  # worth two of them, and a little
    r = _run(repo, "burst", "python3 burst.py", "runc", upstream, "--max-cost", f"{cap:.6f}")
    assert r.code == 0, r.stderr
    summary = r.json()
    # Two at once, a third alone once they settled (the lone request a budget always allows), no more.
    assert upstream.peak == 2 and len(upstream.seen) == 3
    spent = summary["usage"]["costUsd"]
    assert spent == pytest.approx(3 * COST) and spent - cap < COST  # over the cap by less than one request
    log = [json.loads(line) for line in (repo.journal("burst") / "gateway.log").read_text().splitlines()]
    assert sum(line.get("refused") == "budget" for line in log) >= 1
    assert sum(line.get("status") == 200 for line in log) == 3


# ---- row 20: the echo -------------------------------------------------------------------------------

ECHO_PROBE = r"""
import json, os, socket
port = int(os.environ["ANTHROPIC_BASE_URL"].rsplit(":", 1)[1])
body = json.dumps({"model": "claude-opus-4-1", "max_tokens": 10, "stream": True, "messages": []}).encode()
s = socket.create_connection(("127.0.0.1", port))
head = ("POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nx-api-key: placeholder\r\nx-marker: echo-marker-42\r\n"
        f"content-type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
s.sendall(head.encode() + body)
data = b""
while chunk := s.recv(65536):
    data += chunk
open("echo.txt", "wb").write(data)
json.dump({"state": "done", "summary": "echo"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


@ROW20
def test_an_echoing_upstream_does_not_hand_the_key_to_the_agent(
    repo: GitRepo, runtime: str, upstream: Upstream
) -> None:
    _commit(repo, "echo.py", ECHO_PROBE)
    r = _run(repo, "echo", "python3 echo.py", runtime, upstream)
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    answer = repo.git("show", "harness/echo:echo.txt")
    # The trap fired: the upstream got the key and echoed what it was sent, in headers and in the body.
    assert upstream.seen and upstream.seen[0][2]["x-api-key"] == KEY
    assert answer.count("echo-marker-42") >= 2 and "x-echo:" in answer.lower()
    # But the agent holds only markers, in both places.
    assert KEY not in answer and answer.count("[REDACTED:ANTHROPIC_API_KEY]") >= 2
    assert KEY not in journal_text(repo, "echo") and KEY not in repo.git("log", "-p", "harness/echo")


# ---- row 21: a connection flood ---------------------------------------------------------------------

FLOOD_PROBE = r"""
import json, os, socket, time, urllib.request
held, failed = [], 0
for _ in range(900):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)  # a full backlog refuses at once instead of blocking
    try:
        s.connect("/harness-net/gateway.sock")
    except BlockingIOError:
        pass  # in progress
    except OSError:
        failed += 1
        s.close()
        continue
    held.append(s)
# Hold them until the host has counted the supervisor's descriptors: it says so with a file in /harness (the
# prompt's directory, the host's to write), waited for with a deadline.
print("FLOOD-HELD", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists("/harness/release") and time.monotonic() < deadline:
    time.sleep(0.05)
for s in held:
    s.close()
req = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/models", headers={"x-api-key": "p"})
status = 0
for _ in range(100):  # the gateway is free again once the flood is gone
    try:
        status = urllib.request.urlopen(req, timeout=10).status
        break
    except Exception:
        time.sleep(0.2)
print("FLOOD", json.dumps({"held": len(held), "failed": failed, "after": status}), flush=True)
json.dump({"state": "done", "summary": "flood"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _supervised(
    repo: GitRepo, session: str, up: Upstream, env: dict[str, str], counted: Callable[[int], bool]
) -> tuple[Result, int]:
    """`harness run` of the flood in the foreground (the supervisor is this child process), and the most
    descriptors it held while running. Once the probe holds its connections, `counted(pid)` is waited for;
    then the probe is told to let them go."""
    args = [*HARNESS, *run_args(session, cmd="python3 flood.py", objective="flood", iterations=1)]
    full_env = {**os.environ, "ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY, **env}
    proc = subprocess.Popen(args, cwd=repo.path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        while not done.wait(0.02):
            try:
                peak = max(peak, len(os.listdir(fd_dir)))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        journal = repo.journal(session)
        wait_for(lambda: "FLOOD-HELD" in _text(journal / "iteration-0001.log"), timeout=120, what="the flood")
        wait_for(lambda: counted(proc.pid), timeout=60, what="the supervisor's descriptors to be counted")
        run_dir = Path(json.loads((journal / "run-summary.json").read_text())["runDir"])
        (run_dir / "prompt" / "release").write_text("")
        out, err = proc.communicate(timeout=240)
    finally:
        done.set()
        proc.kill() if proc.poll() is None else None
    sampler.join(5)
    return Result(proc.returncode, out, err), peak


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _flood_report(result: Result, repo: GitRepo, session: str) -> dict[str, Any]:
    log = (repo.journal(session) / "iteration-0001.log").read_text()
    line = next(line for line in log.splitlines() if line.startswith("FLOOD "))
    report: dict[str, Any] = json.loads(line.removeprefix("FLOOD "))
    return report


@ROW21
def test_a_connection_flood_leaves_the_supervisor_its_descriptors(repo: GitRepo, upstream: Upstream) -> None:
    _commit(repo, "flood.py", FLOOD_PROBE)
    uncapped = {"HARNESS_GATEWAY_MAX_CONNECTIONS": "100000"}
    control, control_peak = _supervised(repo, "flood-uncapped", upstream, uncapped, lambda pid: _fds(pid) > 900)
    assert control.code == 0, control.stderr
    # The trap: without the cap, every connection of the flood is a descriptor of the supervisor's.
    assert control_peak > 900
    capped = repo.journal("flood") / "gateway.log"
    r, peak = _supervised(repo, "flood", upstream, {}, lambda pid: "connection-cap" in _text(capped))
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    report = _flood_report(r, repo, "flood")
    assert report["held"] == 900 and report["failed"] == 0  # every connection was made (queued past the cap)
    assert report["after"] == 200  # the gateway served again once the flood was gone
    assert peak < 192 + 100  # the cap, and the supervisor's own handful
    log = [json.loads(line) for line in (repo.journal("flood") / "gateway.log").read_text().splitlines()]
    assert log[0] == {**log[0], "refused": "connection-cap", "openConnections": 192}
    assert (repo.journal("flood") / "iteration-0001.json").is_file()
