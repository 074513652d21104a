"""Where things are inside every harness container: the contract between the harness images and the code.

Engines, the sandbox recipe, the agents and the gateway all name these; they sit in the base so that an
engine needs nothing from the layers above it.
"""

from __future__ import annotations

AGENT_UID = 10001  # baked into the harness images; never the host user's uid
WORKSPACE = "/workspace"
PROMPT_DIR = "/harness"
OUTBOX_DIR = "/harness-out"
STATUS_FILE = f"{OUTBOX_DIR}/status.json"
HOME = "/home/agent"
# A repository's shared seed (runner/loop/seed.py), read-only in every container of a copy made from it; the
# copy's .git/objects/info/alternates names its objects here.
SEED_DIR = "/harness-seed"
# The network sockets of a run (model gateway, egress proxy) live in a host directory that the
# agent can read but not write; inside, `harness-relay` turns each into a loopback TCP port.
NET_DIR = "/harness-net"
GATEWAY_SOCKET = "gateway.sock"
EGRESS_SOCKET = "egress.sock"
GATEWAY_PORT = 8787
EGRESS_PORT = 8788
RELAY = "harness-relay"


# One pipe for stdout and stderr: the output keeps the order it was written in, so a secret
# printed in pieces across both streams still reaches the redactor in one piece.
# HARNESS_PATH (the setup's tool directories, such as a virtualenv's bin) goes in front of the image's PATH.
MERGE_OUTPUT = (
    "sh",
    "-c",
    '[ -z "${HARNESS_PATH:-}" ] || export PATH="$HARNESS_PATH:$PATH"; exec "$@" 2>&1',
    "harness-agent",
)


def with_merged_output(command: list[str]) -> list[str]:
    return [*MERGE_OUTPUT, *command]
