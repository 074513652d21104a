"""The offline deterministic agent shipped in the base image (no model, nothing to parse)."""

from __future__ import annotations

from runner.agents.base import AgentAdapter, AgentOptions, Endpoints
from runner.sandbox.images import DEFAULT_IMAGE


class Demo(AgentAdapter):
    name = "demo"
    image = DEFAULT_IMAGE
    description = "offline deterministic agent shipped in the base image (no model)"

    def command(self, options: AgentOptions, endpoints: Endpoints) -> list[str]:
        return ["harness-demo-agent"]
