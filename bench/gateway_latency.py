"""Gateway latency: what the model gateway and the in-container relay add to a model request.

A stand-in model API (bench/_sse_upstream.py, its own process on host loopback) answers
`POST /v1/messages` with Anthropic-style SSE. The real `ModelGateway` serves it on a Unix socket in
a `ServerThread` of this process, as a supervisor does. One client (bench/_gateway_client.py, stdlib
Python) runs in two containers of the harness's image, as the agent's uid, hardened, with the agent's
default CPU limit, the gateway's socket directory mounted read-only at /harness-net:

- relay: `--network none`, behind `harness-relay --listen 127.0.0.1:8787=/harness-net/gateway.sock`,
  as an agent runs: client -> relay -> Unix socket -> gateway -> upstream (the measured path);
- host: `--network host`, the same client calling the upstream on 127.0.0.1 directly (the baseline),
  and the gateway's socket without the relay (to tell the relay's share from the gateway's).

In each round, in alternating order, each path serves (a) requests one at a time on a kept-alive
connection (a short streamed answer, each event its own write, as a model streams) and a few on a
new connection each, (b) 32 concurrent streams of a long answer as fast as the upstream can send it,
(c) 32 concurrent streams at a model's pace (an event every 10 ms). Latency is the client's time to
the last byte of the answer (and to its first body byte), pooled over the rounds for p50 and taken
per round for p99; throughput is the streamed body bytes over the wall time of the 32 streams, the
median of the rounds. The gateway thread's CPU time is read from its own clock around each batch.
Every answer is checked (status, exact size, final event) and the gateway must have counted every
request it served. Only loopback and Unix sockets carry traffic.

Goals (issue 16): <= 2 ms added at p50, gateway throughput >= 0.9x direct.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _gateway_client
from bench._common import IMAGE, BenchEnv, BenchError, Ratio, Result, bench_env, main

NAME = "gateway-latency"
MANAGED = "io.solo-harness.managed=1"
BENCH_KEY = "sk-bench-upstream-key-not-real"
THREAD = "bench-gateway"
START_TIMEOUT = 60.0
ASK_TIMEOUT = 300.0  # one command of the client (the client bounds each request itself)
GOAL_ADDED_MS = 2.0
GOAL_THROUGHPUT = 0.9
NAGLE_MS = 20.0  # a request this much slower than the socket's p50 waited for a delayed ACK, it did no work
STALLED_PERCENT = 5.0

PATHS = {  # key: (container, target, title)
    "direct": ("host", "direct", "direct (upstream on host loopback)"),
    "socket": ("host", "socket", "gateway, socket mounted (no relay)"),
    "relay": ("relay", "gateway", "gateway through the relay (as an agent)"),
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    requests: int  # one at a time, kept-alive, per path and round
    fresh: int  # one at a time, a new connection each, per path and round
    streams: int
    stream_bytes: int  # per stream
    answer_bytes: int = 2048  # of the one-at-a-time answers, each event its own write
    events_per_write: int = 64  # of the long answers: about 9 KB a write, as a fast upstream's segments
    body_bytes: int = 2000  # of each request
    paced_bytes: int = 28_000  # of the answers at a model's pace: about 200 events, one a write
    pause_ms: float = 10.0  # between two events at a model's pace (100 events a second)


FULL = Plan(rounds=7, requests=300, fresh=60, streams=32, stream_bytes=4 * 1024**2)
QUICK = Plan(rounds=2, requests=30, fresh=5, streams=32, stream_bytes=128 * 1024, paced_bytes=2800)


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)  # ms, one-at-a-time, kept-alive, pooled
    ttfb: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)  # per round
    p99: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    mbps: list[float] = field(default_factory=list)  # 32 streams, per round
    stream_ttfb: list[float] = field(default_factory=list)
    paced: list[float] = field(default_factory=list)  # ms to the last byte of each paced stream, pooled
    paced_p99: list[float] = field(default_factory=list)  # per round
    stalled: list[float] = field(default_factory=list)  # % of kept-alive requests NAGLE_MS over the socket's p50
    paced_mbps: list[float] = field(default_factory=list)
    cpu_request: list[float] = field(default_factory=list)  # ms of the gateway's thread, per request
    cpu_mb: list[float] = field(default_factory=list)  # ms of the gateway's thread, per streamed MB


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---- the upstream, the gateway, the clients ---------------------------------------------------


class Lines:
    """Read whole lines from a pipe with a deadline (never a blocking read without one)."""

    def __init__(self, stream: Any, what: str) -> None:
        self.fd, self.what, self.buffer = stream.fileno(), what, b""

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.what}: no answer within {timeout:g} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                data = os.read(self.fd, 1 << 20)
                if not data:
                    raise BenchError(f"{self.what}: ended without an answer")
                self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


@contextlib.contextmanager
def upstream(env: BenchEnv) -> Iterator[int]:
    """The stand-in API in its own process; its port. It ends when its stdin closes."""
    log = (env.tmp / "upstream.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._sse_upstream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        try:
            port = int(json.loads(Lines(proc.stdout, "the stand-in upstream").read(START_TIMEOUT))["port"])
        except BenchError as exc:
            raise BenchError(f"{exc}: {(env.tmp / 'upstream.log').read_text()[-400:]}") from None
        yield port
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@contextlib.contextmanager
def gateway(env: BenchEnv, port: int) -> Iterator[tuple[Any, Path]]:
    """The real model gateway on a Unix socket in a directory the containers mount read-only."""
    from runner.base.layout import GATEWAY_SOCKET
    from runner.gateway.loop import ServerThread
    from runner.gateway.model import ModelGateway
    from runner.gateway.prices import BUILTIN, PriceTable
    from runner.gateway.upstreams import Upstream

    net = env.tmp / "net"
    net.mkdir(mode=0o755)
    net.chmod(0o755)
    url = f"http://127.0.0.1:{port}"
    gw = ModelGateway(
        socket_path=net / GATEWAY_SOCKET,
        log_path=env.tmp / "gateway.log",
        upstreams={"anthropic": Upstream("anthropic", url, BENCH_KEY), "openai": Upstream("openai", f"{url}/v1", None)},
        prices=PriceTable(BUILTIN),
    )
    thread = ServerThread(THREAD)
    thread.start()
    try:
        thread.serve(gw)
        yield gw, net
    finally:
        thread.stop()


def gateway_cpu() -> float:
    """CPU seconds of the gateway's thread so far (its own clock: nanoseconds, not clock ticks)."""
    for t in threading.enumerate():
        if t.name == THREAD and t.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    raise BenchError("the gateway's thread is not running")


def meter_cost(plan: Plan) -> list[float]:
    """Milliseconds of CPU per MB that the gateway's usage meter alone spends on the long answer, in
    this thread, fed the upstream's writes; empty when the meter is not the one this was written for."""
    from bench._sse_upstream import reply

    try:
        from runner.gateway.usage import UsageMeter
    except ImportError:
        return []
    writes, total = reply(plan.stream_bytes, plan.events_per_write)
    samples = []
    for _ in range(5):
        try:
            meter = UsageMeter("messages", streaming=True, request_model="claude-sonnet-4-5")
            start = time.thread_time()
            for chunk in writes:
                meter.feed(chunk)
            meter.finish()
            cpu = time.thread_time() - start
        except (TypeError, AttributeError):
            return []
        samples.append(round(cpu * 1000 / (total / 1e6), 2))
    return samples


class Client:
    """The benchmark's client in a container, answering one JSON command per line."""

    def __init__(
        self, env: BenchEnv, name: str, net: Path, *, network: str, relay: list[str], targets: list[str], cpus: float
    ) -> None:
        from runner.base.layout import AGENT_UID, NET_DIR

        self.name = name
        self.stderr_path = env.tmp / f"client-{name}.err"
        source = Path(_gateway_client.__file__).read_text()
        argv = [
            "docker", "run", "--rm", "-i", "--pull", "never", "--label", env.label, "--label", MANAGED,
            "--network", network, "--user", f"{AGENT_UID}:{AGENT_UID}", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--init", "--cpus", f"{cpus:g}",
            "--memory", "512m", "--memory-swap", "512m", "--pids-limit", "64", "-v", f"{net}:{NET_DIR}:ro",
            IMAGE, *relay, "python3", "-c", source, *targets,
        ]  # fmt: skip
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout, f"the {name} client")

    def ask(self, cmd: dict[str, Any], timeout: float = ASK_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            answer: dict[str, Any] = json.loads(self.lines.read(timeout))
        except (BenchError, OSError, ValueError) as exc:
            raise BenchError(f"{exc}; {self.stderr_path.read_text(errors='replace')[-400:]}") from None
        if "error" in answer:
            raise BenchError(f"the {self.name} client, {cmd['op']} to {cmd.get('target')}: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the docker CLI we started; the container goes with the bench's label
            self.proc.wait(10)


# ---- the measurement --------------------------------------------------------------------------


def measure(quick: bool) -> Result:
    from runner.base.layout import GATEWAY_PORT, GATEWAY_SOCKET, NET_DIR, RELAY
    from runner.record.models import Limits

    plan = QUICK if quick else FULL
    cpus = Limits().cpus
    samples = {key: Samples() for key in PATHS}
    with bench_env("gateway") as env, upstream(env) as port, gateway(env, port) as (gw, net):
        sock = f"{NET_DIR}/{GATEWAY_SOCKET}"
        clients: dict[str, Client] = {}
        try:
            clients["host"] = Client(env, "host", net, network="host", relay=[], cpus=cpus,
                                     targets=[f"direct=tcp:127.0.0.1:{port}", f"socket=unix:{sock}"])  # fmt: skip
            clients["relay"] = Client(env, "relay", net, network="none", cpus=cpus,
                                      relay=[RELAY, "--listen", f"127.0.0.1:{GATEWAY_PORT}={sock}", "--"],
                                      targets=[f"gateway=tcp:127.0.0.1:{GATEWAY_PORT}"])  # fmt: skip
            served = _run(plan, clients, samples)
        finally:
            for client in clients.values():
                client.close()
        usage = gw.total_usage()
    if usage.requests != served or usage.tokens.input_tokens != 1000 * served:
        raise BenchError(f"the gateway counted {usage.requests} requests ({usage.tokens.input_tokens} input tokens) "
                         f"of the {served} it served")  # fmt: skip
    return _result(plan, quick, cpus, samples, served, meter_cost(plan))


def _run(plan: Plan, clients: dict[str, Client], samples: dict[str, Samples]) -> int:
    """Every round, every path, in alternating order; the number of requests the gateway served."""
    one = f"{plan.answer_bytes},1"
    long = f"{plan.stream_bytes},{plan.events_per_write}"
    paced = f"{plan.paced_bytes},1,{plan.pause_ms:g}"
    served = 0

    def ask(key: str, cmd: dict[str, Any]) -> tuple[dict[str, Any], float]:
        nonlocal served
        container, target, _ = PATHS[key]
        before = gateway_cpu()
        answer = clients[container].ask({**cmd, "target": target, "body": plan.body_bytes})
        if key != "direct":
            served += len(answer["total"])
        return answer, gateway_cpu() - before

    for key in PATHS:  # warm-up: interpreters, connections, the upstream's answers
        ask(key, {"op": "seq", "n": 10, "reply": one})
        ask(key, {"op": "streams", "n": plan.streams, "reply": f"{64 * 1024},{plan.events_per_write}"})
    for round_no in range(plan.rounds):
        keys = list(PATHS) if round_no % 2 == 0 else list(PATHS)[::-1]
        for key in keys:
            got, cpu = ask(key, {"op": "seq", "n": plan.requests, "reply": one})
            s = samples[key]
            total = [round(v * 1000, 3) for v in got["total"]]
            s.total += total
            s.ttfb += [round(v * 1000, 3) for v in got["ttfb"]]
            s.p50.append(statistics.median(total))
            s.p99.append(percentile(total, 99))
            if key != "direct":
                s.cpu_request.append(round(cpu * 1000 / plan.requests, 3))
        if samples["socket"].p50:  # the socket's p50 of this round (it ran in this round, whatever the order)
            limit = samples["socket"].p50[-1] + NAGLE_MS
            relay_round = samples["relay"].total[-plan.requests :]
            samples["relay"].stalled.append(100 * sum(v >= limit for v in relay_round) / len(relay_round))
        for key in keys:
            got, _ = ask(key, {"op": "seq", "n": plan.fresh, "reply": one, "fresh": True})
            samples[key].fresh += [round(v * 1000, 3) for v in got["total"]]
        for key in keys:
            got, cpu = ask(key, {"op": "streams", "n": plan.streams, "reply": long})
            s = samples[key]
            s.mbps.append(got["bytes"] / got["seconds"] / 1e6)
            s.stream_ttfb += [round(v * 1000, 3) for v in got["ttfb"]]
            if key != "direct":
                s.cpu_mb.append(round(cpu * 1000 / (got["bytes"] / 1e6), 2))
        for key in keys:
            got, _ = ask(key, {"op": "streams", "n": plan.streams, "reply": paced})
            s = samples[key]
            total = got["total"]
            s.paced += total
            s.paced_p99.append(percentile(total, 99))
            s.paced_mbps.append(got["bytes"] / got["seconds"] / 1e6)
    return served


def _result(
    plan: Plan, quick: bool, cpus: float, samples: dict[str, Samples], served: int, meter: list[float]
) -> Result:
    result = Result(NAME, "Model gateway latency and throughput", quick)
    n = plan.streams
    for key, (_, _, title) in PATHS.items():
        s = samples[key]
        result.add(f"{title}: one request, to the last byte, p50", s.total, "ms")
        result.add(f"{title}: one request, to the last byte, p99 (per round)", s.p99, "ms")
        result.add(f"{title}: one request, to the first byte, p50", s.ttfb, "ms")
        result.add(f"{title}: one request on a new connection, p50", s.fresh, "ms")
        result.add(f"{title}: {n} streams, throughput", s.mbps, "MB/s")
        result.add(f"{title}: {n} streams, to the first byte, p50", s.stream_ttfb, "ms")
        result.add(f"{title}: {n} streams at a model's pace, to the last byte, p50", s.paced, "s")
        result.add(f"{title}: {n} streams at a model's pace, to the last byte, p99 (per round)", s.paced_p99, "s")
    direct, socket_, relay = samples["direct"], samples["socket"], samples["relay"]
    p50 = {key: statistics.median(samples[key].total) for key in PATHS}
    added = p50["relay"] - p50["direct"]
    added_p99 = statistics.median(relay.p99) - statistics.median(direct.p99)
    stalled = result.add(
        f"through the relay: requests {NAGLE_MS:g} ms or more slower than the socket's p50 (per round)",
        relay.stalled,
        "%",
    )
    cpu_request = result.add("gateway thread CPU per request, one at a time", socket_.cpu_request + relay.cpu_request,
                             "ms")  # fmt: skip
    cpu_mb = result.add("gateway thread CPU per streamed MB", socket_.cpu_mb + relay.cpu_mb, "ms")
    meter_mb = result.add("of which the usage meter alone (in-process, same answer)", meter, "ms") if meter else None
    throughput = statistics.median(relay.mbps) / statistics.median(direct.mbps)
    socket_throughput = statistics.median(socket_.mbps) / statistics.median(direct.mbps)
    why_latency = _why_latency(p50, cpu_request.median, stalled.median)
    paced = statistics.median(relay.paced_mbps) / statistics.median(direct.paced_mbps)
    why_throughput = _why_throughput(
        plan, samples, socket_throughput, cpu_mb.median, meter_mb.median if meter_mb else None, paced
    )
    result.ratios = [
        Ratio(f"added at p50 / {GOAL_ADDED_MS:g} ms", added / GOAL_ADDED_MS, 1.0, why=why_latency),
        Ratio("through the relay / direct, p50", p50["relay"] / p50["direct"]),
        Ratio("through the relay / direct, p99", statistics.median(relay.p99) / statistics.median(direct.p99)),
        Ratio(
            f"through the relay / direct, {n} streams' throughput", throughput, GOAL_THROUGHPUT, True, why_throughput
        ),
        Ratio(f"socket, no relay / direct, {n} streams' throughput", socket_throughput),
        Ratio(f"through the relay / direct, {n} streams at a model's pace, throughput", paced),
    ]
    result.facts = [
        f"{plan.rounds} rounds, the three paths in alternating order; per round and path {plan.requests} requests one "
        f"at a time on a kept-alive connection and {plan.fresh} on a new connection each ({plan.body_bytes:,}-byte "
        f"request, {plan.answer_bytes:,}-byte streamed answer, one write per SSE event), then {n} concurrent streams "
        f"of {plan.stream_bytes / 1024**2:g} MiB each ({plan.events_per_write} events a write, as fast as the upstream "
        f"can), then {n} streams at a model's pace ({plan.paced_bytes:,} bytes, one event every {plan.pause_ms:g} ms)",
        f"the clients run in containers of {IMAGE} as the agent uid, hardened, with --cpus {cpus:g} (the agent's "
        "default): the relay shares that CPU with the client as it shares it with an agent; the stand-in upstream "
        "is a process of its own on host loopback; the gateway is the real one, in a server thread of the "
        "benchmark's process as in a supervisor's",
        f"added at p50 (one request at a time, kept-alive, all rounds): {added:.2f} ms, of which the relay "
        f"{p50['relay'] - p50['socket']:.2f} ms and the gateway {p50['socket'] - p50['direct']:.2f} ms; added at p99 "
        f"(median of the rounds): {added_p99:.2f} ms",
        f"the gateway served {served:,} requests, each checked by the client (status, size, final event), and "
        "counted every one",
    ]
    return result


def _why_latency(p50: dict[str, float], cpu_ms: float, stalled: float) -> str:
    why = (
        f"the gateway adds {p50['socket'] - p50['direct']:.2f} ms at p50 (its socket without the relay, against "
        f"direct) and the relay {p50['relay'] - p50['socket']:.2f} ms; the gateway's thread spends {cpu_ms:.2f} ms of "
        "CPU per request"
    )
    if stalled >= STALLED_PERCENT:
        why += (
            f". The relay's share is a stall, not work: {stalled:.0f} % of the requests through it (median of the "
            "rounds) took about 40 ms more on a kept-alive connection, and none on a new one (the rows 'on a new "
            "connection'): Nagle's algorithm meeting the client's delayed ACK. harness-relay's TCP sockets lack "
            "TCP_NODELAY: asyncio sets it only on a socket whose proto is IPPROTO_TCP, and the relay makes its "
            "listening socket with `socket.socket(family, SOCK_STREAM)` (proto 0), which its accepted sockets "
            "inherit; so the next small write of an answer waits for the ACK of the last, which the client delays. "
            "Making that socket with `socket.IPPROTO_TCP` (or setting TCP_NODELAY on each accepted socket) removes "
            "the stall: tried with a copy of the relay, its share at p50 fell to about 0.05 ms"
        )
    return why


def _why_throughput(
    plan: Plan, samples: dict[str, Samples], socket_ratio: float, cpu_mb: float, meter_mb: float | None, paced: float
) -> str:
    direct = statistics.median(samples["direct"].mbps)
    cores = os.cpu_count() or 1
    budget = (1 / GOAL_THROUGHPUT - 1) * cores * 1000 / direct
    why = (
        f"the gateway's thread spends {cpu_mb:.1f} ms of CPU per streamed MB, so one core carries at most about "
        f"{1000 / max(cpu_mb, 1e-9):.0f} MB/s through it; without the relay it reaches {socket_ratio:.2f}x direct"
    )
    if meter_mb is not None and meter_mb > cpu_mb / 2:
        why += (
            f". The usage meter alone costs {meter_mb:.1f} ms per MB: it cuts every SSE line out of a buffer in "
            "Python and parses the JSON of every event, where only the few events that name the model or carry "
            "the usage count (Anthropic's message_start and message_delta, a Responses terminal event, a chat "
            "chunk with usage). Splitting whole events in C (`bytes.split`) and parsing only those that contain "
            '`"usage"` or `"model"` costs about 1 ms per MB (tried on the same answer)'
        )
    why += (
        f". Against a stand-in that streams as fast as loopback allows, the goal is out of reach for any proxy "
        f"written in Python here: if the direct path's client and upstream keep this machine's {cores} cores busy "
        f"at {direct:.0f} MB/s, 0.9x leaves the gateway and the relay together {budget:.2f} ms of CPU per MB. At a "
        f"model's pace (the last rows: {1000 / plan.pause_ms:g} events a second on each of {plan.streams} streams) "
        f"the gateway delivers {paced:.2f}x direct"
    )
    return why


if __name__ == "__main__":
    main(measure, __doc__)
