"""Protected paths (`--protect`): patterns of repository paths the check runs with as the base commit has them.

A pattern is anchored at the repository's top and split on `/`: a component may hold the glob characters
`*`, `?` and `[...]` (within that component), and a component `**` spans any number of components, none
included (`**/conftest.py` is every conftest.py, the top one too). A pattern protects the paths it names and
everything below them (`tests` is the whole directory). `.git` is never protected: the check sees the copy's own.

This module imports nothing but the standard library, and has no `from __future__` line: its source is also
run, as it is, by the helper that builds the check's view of the copy (runner/loop/protect.py), so that the
host and the helper can never disagree about what a pattern protects.
"""

import functools
import re
from collections.abc import Sequence

MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 1024


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a protected path (None when it can): empty, absolute, `.` or `..` in it,
    a control character, or a pattern that would protect the whole tree."""
    shown = pattern.encode("unicode_escape").decode("ascii")[:80]
    if not pattern.strip("/"):
        return f"{shown!r} is empty: name a path of the repository (e.g. tests, **/conftest.py)"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"{shown!r}... is longer than {MAX_PATTERN_CHARS} characters"
    if pattern.startswith("/"):
        return f"{shown!r} is absolute: patterns are relative to the repository's top (e.g. tests)"
    if any(ord(c) < 32 or ord(c) == 127 for c in pattern):
        return f"{shown!r} holds a control character"
    parts = split(pattern)
    if any(p in {".", ".."} for p in parts):
        return f"{shown!r} has a '.' or '..' component: name the path from the repository's top"
    if all(p in {"**", "*"} for p in parts):
        return f"{shown!r} would protect the whole tree: the check would never see the agent's work"
    if parts[0] == ".git":
        return f"{shown!r} is inside .git, which is never protected"
    try:
        _compiled(pattern)
    except re.error as exc:
        return f"{shown!r} is not a pattern: {exc}"
    return None


def split(pattern: str) -> list[str]:
    """A pattern's components: without empty ones (`tests/`, `a//b`)."""
    return [p for p in pattern.split("/") if p]


def _component(glob: str) -> str:
    """A regular expression for one component's glob, as fnmatch reads it, never matching a `/`."""
    out, i = [], 0
    while i < len(glob):
        ch, i = glob[i], i + 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = i + (glob[i : i + 1] == "!")
            j += glob[j : j + 1] == "]"
            j = glob.find("]", j)
            if j < 0:
                out.append(re.escape(ch))
                continue
            chars, i = glob[i:j].replace("\\", "\\\\"), j + 1
            chars = "^" + chars[1:] if chars.startswith("!") else ("\\" + chars if chars.startswith("^") else chars)
            out.append(f"(?!/)[{chars}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> "re.Pattern[str]":
    """`pattern` as a regular expression that matches, from the start, the path of what it protects or of one
    of its parents, each with a `/` after it (`**` is any number of components, each with its `/`)."""
    return re.compile("".join("(?:[^/]+/)*" if part == "**" else _component(part) + "/" for part in split(pattern)))


def matches(pattern: str, path: str, *, fold: bool = False) -> bool:
    """Whether `pattern` protects `path` (a repository path): it names the path or one of its parents.
    `fold`: compared without case (a review: on a case-insensitive checkout `Tests/` is `tests/`)."""
    if fold:
        pattern, path = pattern.casefold(), path.casefold()
    parts = split(path)
    if not parts or parts[0] == ".git":
        return False
    return _compiled(pattern).match("/".join(parts) + "/") is not None


def is_protected(patterns: Sequence[str], path: str, *, fold: bool = False) -> bool:
    """Whether any of `patterns` protects `path`."""
    return any(matches(p, path, fold=fold) for p in patterns)
