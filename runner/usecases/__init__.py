"""The use cases: one module per thing a user asks of the harness, each returning a typed result.

Plan, run, resume and detach a session (`runs`), read its state (`status`, `hud`, `logs`), review and report
it (`review`, `report`), control it (`control`) and collect garbage (`gc`). Nothing here prints: the CLI
renders. It may import every layer below the CLI.
"""
