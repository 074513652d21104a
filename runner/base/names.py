"""Session names: a strict pattern, because they become paths, refs and container labels."""

from __future__ import annotations

import re

from runner.base.errors import UsageError

SESSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_session(name: str) -> str:
    """Return `name` if it is a safe session id, else raise UsageError saying why."""
    if not SESSION_PATTERN.fullmatch(name) or ".." in name or name.endswith((".", ".lock")):
        shown = name.encode("unicode_escape").decode("ascii")[:80]
        raise UsageError(
            f"invalid session name {shown!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def branch_for(session: str) -> str:
    return f"refs/heads/harness/{session}"
