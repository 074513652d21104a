"""The loop and the copy: one session's iterations, on the agent's own copy of the repository.

The supervisor (iterations, limits, watchdog, checkpoints), the copy and its harvest (`workspace`, the
resident helper), the setup phase, the prompt, and the paths flagged for review. It may import
`runner.agents`, `runner.gateway`, `runner.sandbox`, `runner.backends`, `runner.record` and `runner.base`.
"""
