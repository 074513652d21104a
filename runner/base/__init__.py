"""The base: what every layer may use and that knows nothing of runs.

Errors (the one root and its exit codes), output sinks, host paths and the `HARNESS_*` seams, names and limits
as the user types them, redaction, atomic writes and careful reads of files the agent could have touched. It
imports nothing of `runner` outside itself.
"""
