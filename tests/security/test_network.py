"""Attack row 5: reach the network from a `--network none` run."""

from __future__ import annotations

import pytest

from tests.helpers import GitRepo
from tests.security.conftest import iteration, run_agent

pytestmark = pytest.mark.docker

# Each probe prints OPEN when a connection succeeds; the loopback listener is the positive control
# that proves the probe can report success at all.
PROBE = r"""
python3 - <<'PY'
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=srv.accept, daemon=True).start()
def probe(host, port):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); print("OPEN", host, port)
    except OSError as e:
        print("CLOSED", host, port, type(e).__name__)
probe("127.0.0.1", srv.getsockname()[1])
for host, port in [("1.1.1.1", 53), ("8.8.8.8", 443), ("10.0.0.1", 80), ("172.17.0.1", 2375), ("192.168.1.1", 80)]:
    probe(host, port)
try:
    socket.getaddrinfo("deb.debian.org", 80); print("DNS resolved")
except OSError as e:
    print("DNS failed", type(e).__name__)
import os
print("interfaces", sorted(os.listdir("/sys/class/net")))
PY
printf '{"state": "done", "summary": "probed"}' > "$HARNESS_STATUS_FILE"
"""


@pytest.mark.attack(row=5, name="reach the network from a `none` run (any address, DNS)")
def test_no_network_but_loopback(repo: GitRepo, runtime: str) -> None:
    r = run_agent(repo, "net", PROBE, runtime)
    assert r.code == 0, r.stderr
    log = (repo.journal("net") / "iteration-0001.log").read_text()
    assert "OPEN 127.0.0.1" in log  # positive control: the probe does see an open port
    assert log.count("OPEN") == 1, log
    assert log.count("CLOSED") == 5, log
    assert "DNS failed" in log
    assert iteration(repo, "net")["outcome"] == "done"
