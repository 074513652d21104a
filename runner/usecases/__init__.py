"""The use cases: one module per thing a user asks of the harness, each returning a typed result.

Plan a run (`plan`), create, resume and drive a session (`sessions`) or detach it (`detach`), with the
options `run` and `resume` share (`options`); read its state (`status`, `hud`, `logs`), review it (`review/`:
what its branch would change and what needs care), take or throw away its branch (`merge`, `discard`), report
on it (`report`), control it (`control`) and collect garbage (`gc`); `repository` opens a session of a
repository for all of them. Nothing here prints: the CLI renders. It may import every layer below the CLI.
"""
