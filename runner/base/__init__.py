"""The base: what every layer may use and that knows nothing of runs.

Errors (the one root and its exit codes), output sinks, host paths and the `HARNESS_*` seams, names and limits
as the user types them, redaction, atomic writes and careful reads of files the agent could have touched, and
the host's extra TLS trust (`trust`), which the image builds and the gateway share. It imports nothing of
`runner` outside itself.
"""
