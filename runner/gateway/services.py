"""A run's network, as the supervisor owns it: the model gateway, the egress proxy when the run
allows hosts, and what the agent's container needs to reach them (a read-only mount of their
sockets, the relay in front of the command, and the environment that points tools at them).

They live as long as the supervisor: a detached run has them too, a kill -9 of the supervisor ends
them with it, and `resume` starts them again. The agent's container never gets a route out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.backends.base import Service
from runner.base.errors import UsageError
from runner.base.layout import EGRESS_PORT, EGRESS_SOCKET, GATEWAY_PORT, GATEWAY_SOCKET
from runner.base.seams import harness_env
from runner.gateway.egress import AllowRule, EgressProxy, parse_allow_host
from runner.gateway.loop import ServerThread
from runner.gateway.model import MAX_CONNECTIONS, ModelGateway
from runner.gateway.prices import load_prices
from runner.gateway.routes import Provider
from runner.gateway.upstreams import Upstream, secret_keys, upstreams_from_env
from runner.gateway.usage_limits import UsageLimit
from runner.record.journal import EGRESS_LOG, GATEWAY_LOG
from runner.record.models import GatewayUsage, RunSummary

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
GATEWAY_URL = f"http://{LOOPBACK}:{GATEWAY_PORT}"
PROXY_URL = f"http://{LOOPBACK}:{EGRESS_PORT}"


def gateway_max_connections() -> int:
    """The gateway's connection cap: HARNESS_GATEWAY_MAX_CONNECTIONS, else MAX_CONNECTIONS. Raises UsageError."""
    text = harness_env().gateway_max_connections
    if text is None:
        return MAX_CONNECTIONS
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= 1_000_000):
        raise UsageError(f"HARNESS_GATEWAY_MAX_CONNECTIONS={text[:20]!r}: want a whole number from 1 to 1000000")
    return int(text)


def parse_allow_hosts(values: Sequence[str]) -> list[AllowRule]:
    return [parse_allow_host(v) for v in values]


@dataclass(frozen=True)
class Wiring:
    """What the agent's container needs to reach a run's network: the services (each backend
    relays them to the container's loopback) and the proxy environment (with an egress proxy)."""

    net_dir: Path
    egress: bool
    subscriptions: frozenset[str] = frozenset()  # providers whose credential is a subscription token

    def services(self) -> tuple[Service, ...]:
        gateway = Service("gateway", GATEWAY_PORT, self.net_dir / GATEWAY_SOCKET)
        if not self.egress:
            return (gateway,)
        return gateway, Service("egress", EGRESS_PORT, self.net_dir / EGRESS_SOCKET)

    def proxy_env(self) -> dict[str, str]:
        if not self.egress:
            return {}
        no_proxy = f"{LOOPBACK},localhost"
        return {
            "HTTPS_PROXY": PROXY_URL, "HTTP_PROXY": PROXY_URL, "https_proxy": PROXY_URL, "http_proxy": PROXY_URL,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy,
        }  # fmt: skip


def subscriptions(upstreams: Mapping[Provider, Upstream]) -> frozenset[str]:
    """The providers the gateway serves with a subscription token (the agent then runs in that mode)."""
    return frozenset(p for p, u in upstreams.items() if u.key and u.kind == "subscription")


PROBE_TIMEOUT = 120.0


class RunNetwork:
    """Start with `start()`, end with `stop()`; the supervisor reads the gateway's counters."""

    def __init__(
        self, *, summary: RunSummary, net_dir: Path, journal_dir: Path, secrets: Mapping[str, str] | None = None
    ) -> None:
        self.net_dir = net_dir
        self.network = summary.network
        self.rules = parse_allow_hosts(summary.allow_hosts)
        upstreams = upstreams_from_env(prefer=summary.auth)
        self.secrets = secret_keys(upstreams)
        self.needs_model = summary.agent.name != "demo"  # the offline demo agent calls no model
        self.gateway = ModelGateway(
            socket_path=net_dir / GATEWAY_SOCKET,
            log_path=journal_dir / GATEWAY_LOG,
            upstreams=upstreams,
            prices=load_prices(),
            max_cost_usd=summary.limits.max_cost_usd,
            spent_before_usd=summary.usage.cost_usd,
            max_tokens=summary.limits.max_tokens,
            spent_before_tokens=summary.usage.budget_tokens,
            max_connections=gateway_max_connections(),
            secrets=secrets,  # the values of --env NAME: redacted from the answers too
        )
        self.egress = (
            EgressProxy(socket_path=net_dir / EGRESS_SOCKET, rules=self.rules, log_path=journal_dir / EGRESS_LOG)
            if self.network == "allowlist"
            else None
        )
        self._thread = ServerThread(name=f"harness-net-{summary.session_id}")
        self.wiring = Wiring(net_dir, egress=self.egress is not None, subscriptions=subscriptions(upstreams))

    def start(self) -> None:
        # Host-owned and not writable by the agent's uid; the sockets in it are (to connect).
        self.net_dir.mkdir(mode=0o755, exist_ok=True)
        self.net_dir.chmod(0o755)  # exact even if it existed: the agent only connects
        self._thread.start()
        try:
            self._thread.serve(self.gateway)
            if self.egress is not None:
                self._thread.serve(self.egress)
        except BaseException:
            self._thread.stop()
            raise
        log.info("model gateway on %s%s", self.net_dir / GATEWAY_SOCKET, " and egress proxy" if self.egress else "")
        if not self.secrets and self.needs_model:
            log.warning("no ANTHROPIC_API_KEY or OPENAI_API_KEY here: model calls go upstream without a key")

    def stop(self) -> None:
        self._thread.stop()
        for name in (GATEWAY_SOCKET, EGRESS_SOCKET):
            (self.net_dir / name).unlink(missing_ok=True)

    def iteration_usage(self) -> GatewayUsage:
        return self.gateway.iteration_usage()

    def probe(self, provider: Provider) -> UsageLimit | None:
        """The usage limit `provider` still reports (None: room), by its cheapest request (model.PROBES)."""
        return self._thread.call(self.gateway.probe(provider), timeout=PROBE_TIMEOUT)


@contextlib.contextmanager
def setup_network(
    net_dir: Path, rules: Sequence[AllowRule], log_path: Path
) -> Iterator[tuple[tuple[Service, ...], dict[str, str]]]:
    """The setup's own network while it runs: an egress proxy allowing only `rules`, in a directory of its
    own (the agent's containers never mount it), and no model gateway. Yields the services and the proxy
    environment for the setup's container; with no rules, none (the setup runs with no network at all)."""
    if not rules:
        yield (), {}
        return
    net_dir.mkdir(mode=0o755, exist_ok=True)
    net_dir.chmod(0o755)  # host-owned: the setup's uid only connects
    proxy = EgressProxy(socket_path=net_dir / EGRESS_SOCKET, rules=rules, log_path=log_path)
    wiring = Wiring(net_dir, egress=True)
    with ServerThread(name="harness-setup-net") as thread:
        thread.serve(proxy)
        try:
            # No NO_PROXY: the setup has no gateway on its loopback, and a host it may reach by its IP
            # literal (a package index on the host's loopback) is only reachable through the proxy.
            env = {k: v for k, v in wiring.proxy_env().items() if k.lower() != "no_proxy"}
            yield tuple(s for s in wiring.services() if s.name == "egress"), env
        finally:
            (net_dir / EGRESS_SOCKET).unlink(missing_ok=True)
