"""The gateway: host-side network services of a run, the model gateway and the egress allowlist proxy.

The agent reaches them only through sockets in its run's network directory. It may import `runner.backends`,
`runner.record` and `runner.base`; never `runner.agents` (the two sit side by side) nor `runner.sandbox` (the
TLS trust it shares with the image builds is the base's, `runner.base.trust`).
"""
