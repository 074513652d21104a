"""Protected paths: what the check runs with as the base commit has it, and the check's view of the copy.

An agent that cannot make the project's tests pass can make the check pass instead: rewrite a test to
`assert True`, delete it, add a `conftest.py` that skips everything, or put `-k nothing` in the `addopts` of
`pyproject.toml`. With protected paths (`--protect`, or the default below when a check is set) the check
does not run on the copy as the agent left it but on a view of it: the copy with every protected path taken
out and the base commit's files laid in their place. The agent's changes to them still reach its branch;
the review flags them (`FlagReason.PROTECTED`) and the iteration's check result lists them.

The view is made by a helper as the agent uid (runner/loop/workspace.py, `Workspace.check_view`) with the
script below, which runs the pattern code of runner/base/protect.py itself.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from runner.base import protect as patterns_module
from runner.base.protect import is_protected, matches, pattern_problem
from runner.record.models import ProtectedChange

# The default, when a check is set and --protect is not given (docs/overnight.md, "A check the agent
# cannot game"). Directories and test files are protected when the base has them; the rest always, as a
# conftest.py or a runner's configuration the agent adds changes what the check runs.
TEST_DIRS = ("tests", "test", "testing", "spec", "specs", "__tests__")
TEST_FILES = (
    "**/test_*.py", "**/*_test.py", "**/*_test.go",
    "**/*.test.js", "**/*.test.ts", "**/*.test.jsx", "**/*.test.tsx",
    "**/*.spec.js", "**/*.spec.ts", "**/*.spec.jsx", "**/*.spec.tsx",
)  # fmt: skip
RUNNER_FILES = (
    "**/conftest.py", "pyproject.toml", "setup.cfg", "pytest.ini", ".pytest.ini", "tox.ini", "noxfile.py",
    "package.json", "jest.config.*", "vitest.config.*", ".mocharc.*",
)  # fmt: skip
MAKEFILES = ("Makefile", "makefile", "GNUmakefile")  # when the check runs make

MAX_CHANGES = 1000  # changed protected paths the journal lists for one check
MAX_DEPTH = 512  # directories deeper than this in the copy: no view, and so a failed check
_CHANGE_LINE = re.compile(r"^harness-protected (added|modified|deleted) (\".*\")$", re.MULTILINE)
_MORE_LINE = re.compile(r"^harness-protected-more (\d+)$", re.MULTILINE)


def _named_paths(check: str, tree: set[str], dirs: set[str]) -> list[str]:
    """The words of the check that name a file or directory of the base (`pytest tests/unit`, `sh ci/test.sh`,
    `pytest tests/test_a.py::test_b`)."""
    try:
        words = shlex.split(check)
    except ValueError:
        words = check.split()
    found = []
    for word in words:
        path = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        path = path.split("::", 1)[0].removeprefix("./").rstrip("/")
        if path and not path.startswith("-") and pattern_problem(path) is None and (path in tree or path in dirs):
            found.append(path)
    return found


def default_protect(check: str | None, tree: Iterable[str]) -> list[str]:
    """The protected paths when --protect is not given: none without a check; else the paths the check
    names, the conventional test directories and test files the base has, every conftest.py and the test
    runners' configuration files (and the Makefile when the check runs make)."""
    if not check:
        return []
    paths = set(tree)
    dirs = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    found = _named_paths(check, paths, dirs)
    found += [d for d in TEST_DIRS if d in dirs]
    found += [glob for glob in TEST_FILES if any(matches(glob, p) for p in paths)]
    found += list(RUNNER_FILES)
    if re.search(r"(^|[\s;&|(])make(\s|$)", check):
        found += list(MAKEFILES)
    return list(dict.fromkeys(found))


def protected_roots(patterns: Sequence[str], tree: Iterable[str]) -> list[str]:
    """The shortest protected paths that hold every protected path of `tree` (a commit's files): what to
    extract from that commit for the view (`tests`, not each of its files)."""
    roots = set()
    for path in tree:
        parts = path.split("/")
        for n in range(1, len(parts) + 1):
            prefix = "/".join(parts[:n])
            if is_protected(patterns, prefix):
                roots.add(prefix)
                break
    return sorted(roots)


def parse_changes(text: str) -> tuple[list[ProtectedChange], int]:
    """The view helper's report of the protected paths the agent changed; and how many more it left out."""
    changes = []
    for kind, quoted in _CHANGE_LINE.findall(text)[:MAX_CHANGES]:
        try:
            path = json.loads(quoted)
        except ValueError:
            continue
        if isinstance(path, str):
            # A file name that is not UTF-8 arrives with surrogates: shown with replacement characters.
            path = path.encode("utf-8", "replace").decode("utf-8")
            changes.append(ProtectedChange(path=path, change=kind))
    more = _MORE_LINE.findall(text)
    return changes, int(more[-1]) if more else 0


def view_script() -> str:
    """The helper's Python program: runner/base/protect.py's code, then _VIEW's."""
    return Path(patterns_module.__file__).read_text("utf-8") + "\n" + _VIEW


# Runs as the agent uid in a helper with the run directory at /run-root (read-write) and the base's protected
# files at /base (read-only). The copy is linked into the view, not copied: a hard link shares the file, which
# is safe here because the agent's container is stopped while the view exists and the check mounts the view
# read-only, so nothing writes through either name; the view is removed after the check. link() works only
# inside one mount (across two bind mounts of one file system it fails with EXDEV): that is why the helper
# mounts the run directory, the copy's parent, and not the copy and the view apart. Nothing is followed: a
# symlink is linked as a symlink, and a symlinked or non-directory parent of a protected path is replaced. A copy
# that is an overlay of the seed's tree is mounted at /run-root/workspace on its own: its files are copied instead.
# No view is made when the copy's protected paths are exactly the base's ("harness-view same"): the check then
# runs on the copy itself, read-only, which is what the view would hold.
_VIEW = r'''
import errno, json, os, shutil, stat, sys

PATTERNS = json.loads(os.environ["HARNESS_PROTECT"])
SRC, VIEW, BASE = "/run-root/workspace", "/run-root/" + os.environ["HARNESS_VIEW"], "/base"
MAX = int(os.environ["HARNESS_MAX_CHANGES"])
DEPTH = int(os.environ["HARNESS_MAX_DEPTH"])


def entries(path):
    if path.count("/") > DEPTH:  # a walk this deep would end in a RecursionError: say why instead
        sys.exit(f"the copy has directories more than {DEPTH} deep: the check's view is not made")
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except PermissionError:  # a directory the agent closed: its own, opened as the checkpoint does
        os.chmod(path, 0o700)
        return sorted(os.scandir(path), key=lambda e: e.name)


def remove(path):
    """A path of the view (its directories are the helper's own)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def leaves(top, rel, out, empty=False):
    """Every non-directory below top/rel (or top/rel itself), by repository path; `empty`: empty directories too."""
    full = os.path.join(top, rel)
    st = os.lstat(full)
    if stat.S_ISDIR(st.st_mode):
        found = entries(full)
        if empty and not found:
            out[rel] = full
        for e in found:
            leaves(top, rel + "/" + e.name, out, empty)
    else:
        out[rel] = full


def scan(rel, found):
    """The copy's leaves (and empty directories) under its protected paths, as link_tree finds them; nothing made."""
    for e in entries(os.path.join(SRC, rel) if rel else SRC):
        r = rel + "/" + e.name if rel else e.name
        if is_protected(PATTERNS, r):
            leaves(SRC, r, found, empty=True)
        elif e.is_dir(follow_symlinks=False):
            scan(r, found)


def link_tree(rel, agent):
    for e in entries(os.path.join(SRC, rel) if rel else SRC):
        r = rel + "/" + e.name if rel else e.name
        if is_protected(PATTERNS, r):
            leaves(SRC, r, agent)
        elif e.is_dir(follow_symlinks=False):
            os.mkdir(os.path.join(VIEW, r), 0o755)
            link_tree(r, agent)
        else:
            place(e.path, os.path.join(VIEW, r))


LINKS = [True]


def place(src, dst):
    """A file of the copy into the view: linked; copied when the copy is an overlay (another mount than the
    view: link() fails with EXDEV), as it is for every file once one has failed."""
    if LINKS[0]:
        try:
            return os.link(src, dst, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            LINKS[0] = False
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def lay_in(rel, base):
    """The base's rel (protected, or a directory above a protected path) into the view, from the top down, so
    that a symlink or a file the agent put where the base has a directory is replaced before anything goes in."""
    full, target = os.path.join(BASE, rel), os.path.join(VIEW, rel)
    st = os.lstat(full)
    if stat.S_ISDIR(st.st_mode):
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            remove(target)
        if not os.path.lexists(target):
            os.mkdir(target, 0o755)
        for e in entries(full):
            lay_in(rel + "/" + e.name, base)
        return
    remove(target)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(full), target)
    else:
        shutil.copyfile(full, target, follow_symlinks=False)
        os.chmod(target, 0o755 if st.st_mode & 0o111 else 0o644)
    base[rel] = full


def same(a, b):
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISDIR(sa.st_mode):
        return True  # two empty directories (the only ones `leaves` records)
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if not stat.S_ISREG(sa.st_mode) or sa.st_size != sb.st_size or (sa.st_mode & 0o100) != (sb.st_mode & 0o100):
        return False
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


if os.path.lexists(VIEW):
    remove(VIEW)
# When every protected path of the copy is as the base has it (no file added, removed or changed there, not even a
# cache), the view would be the copy itself: the check runs on the copy, and no view is made.
in_copy, in_base = {}, {}
scan("", in_copy)
for e in entries(BASE):
    leaves(BASE, e.name, in_base, empty=True)
if in_copy.keys() == in_base.keys() and all(same(in_copy[p], in_base[p]) for p in in_copy):
    print("harness-view same")
    sys.exit(0)
os.mkdir(VIEW, 0o755)
agent, base = {}, {}
link_tree("", agent)
for e in entries(BASE):
    lay_in(e.name, base)
# Caches a test run leaves (the agent's own runs) are taken out of the view like the rest, but are not news.
news = lambda found: {p: f for p, f in found.items() if not {"__pycache__", ".pytest_cache"} & set(p.split("/"))}
agent, base = news(agent), news(base)
changes = [("deleted", p) for p in base if p not in agent]
changes += [("added", p) for p in agent if p not in base]
changes += [("modified", p) for p in agent if p in base and not same(agent[p], base[p])]
changes.sort(key=lambda c: c[1])
for kind, path in changes[:MAX]:
    print("harness-protected", kind, json.dumps(path))
if len(changes) > MAX:
    print("harness-protected-more", len(changes) - MAX)
print("harness-view ready")
'''
