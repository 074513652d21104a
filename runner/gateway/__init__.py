"""The gateway: host-side network services of a run, the model gateway and the egress allowlist proxy.

The agent reaches them only through sockets in its run's network directory. It may import `runner.sandbox`,
`runner.backends`, `runner.record` and `runner.base`; never `runner.agents` (the two sit side by side).
"""
