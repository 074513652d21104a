"""The setup phase: the project's own environment, made once per session before the agent runs.

`--setup CMD` (or the devcontainer's create commands) runs in the session's copy, as the agent's uid, in
the same hardened container as the agent, but with **no model gateway and no key** (nor the values of
`--env`), and with a network of its own: an egress proxy allowing only `--setup-allow-host` targets (none
by default). What it leaves in the copy outside git (a virtualenv, `node_modules`) stays for every
iteration and the check, and is never committed by the checkpoint. The agent's own containers keep
`--network none`. A per-user package cache (pip, uv, npm, yarn, cargo, go) is mounted, writable, during
setup only, so the next session of the same project sets up fast.

On `resume` the setup runs again when it never passed or when its input files (lockfiles, manifests) differ
at the branch's head from what it last ran with.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from runner.base.errors import UsageError, WorkspaceError
from runner.gateway.egress import AllowRule, parse_allow_host
from runner.record.gitops import HostGit

log = logging.getLogger(__name__)

# Registries a setup commonly needs, by name: `--setup-allow-host pypi`.
PRESETS: dict[str, tuple[str, ...]] = {
    "pypi": ("pypi.org:443", "files.pythonhosted.org:443"),
    "npm": ("registry.npmjs.org:443",),
    "crates": ("crates.io:443", "index.crates.io:443", "static.crates.io:443"),
    "go": ("proxy.golang.org:443", "sum.golang.org:443"),
}

# What a setup usually reads: a change to one of them (at the branch's head) runs it again on resume.
DEFAULT_INPUTS = (
    "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "requirements-dev.txt", "poetry.lock",
    "uv.lock", "Pipfile.lock", "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "Cargo.toml",
    "Cargo.lock", "go.mod", "go.sum", "Gemfile.lock", ".devcontainer/devcontainer.json", ".devcontainer.json",
)  # fmt: skip

CACHE_DIR = "/harness-cache"  # the per-user package cache, mounted during setup only
# Each tool's cache, pointed into the shared one.
CACHE_ENV = {
    "PIP_CACHE_DIR": f"{CACHE_DIR}/pip",
    "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
    "npm_config_cache": f"{CACHE_DIR}/npm",
    "YARN_CACHE_FOLDER": f"{CACHE_DIR}/yarn",
    "CARGO_HOME": f"{CACHE_DIR}/cargo",
    "GOMODCACHE": f"{CACHE_DIR}/go/mod",
    "GOCACHE": f"{CACHE_DIR}/go/build",
}
MAX_OUTPUTS = 256  # paths recorded as the setup's outputs; more are a sign of something else
_MAX_PATH = 1024


def setup_allow_rules(values: Sequence[str]) -> list[AllowRule]:
    """`--setup-allow-host` values with presets expanded, deduplicated, in order. Raises UsageError."""
    rules: list[AllowRule] = []
    for value in values:
        for text in PRESETS.get(value.strip().lower(), (value,)):
            try:
                rule = parse_allow_host(text)
            except UsageError as exc:
                raise UsageError(exc.message.replace("--allow-host", "--setup-allow-host", 1)) from None
            if rule not in rules:
                rules.append(rule)
    return rules


def allow_host_texts(rules: Sequence[AllowRule]) -> list[str]:
    return [str(rule) for rule in rules]


def inputs_digest(git: HostGit, commit: str, inputs: Sequence[str]) -> str:
    """A digest of the input files at `commit` (their blob ids; an absent file counts as absent).

    Read from the user's repository, where the harvest put the copy's commits: the host never reads
    the agent's copy for this."""
    paths = sorted(set(inputs or DEFAULT_INPUTS))
    listing = git.run("ls-tree", "--full-tree", commit, "--", *paths, check=False).stdout
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def snapshot_key(image_id: str, command: str, allow_hosts: Sequence[str], digest: str) -> str:
    """What makes two setups identical: the image's content, the command, its network and its inputs."""
    text = "\0".join([image_id, command, ",".join(sorted(allow_hosts)), digest])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def snapshot_path(cache: Path, key: str) -> Path:
    """Where the outputs of a passed setup are kept for the next identical one (inside the package cache)."""
    return cache / "setups" / f"{key}.tar"


def changed_tracked(text: str) -> bool:
    """Whether `git status --porcelain -z` output shows a tracked file changed (not just new paths)."""
    return any(entry[:2].strip() and not entry.startswith(("?? ", "!! ")) for entry in text.split("\0") if entry)


def parse_outputs(text: str) -> list[str]:
    """The setup's outputs from `git status --porcelain --ignored -z` (untracked and ignored entries),
    printed by a helper in the copy: untrusted, so each path is checked and the list is bounded."""
    outputs: list[str] = []
    for entry in text.split("\0"):
        if not entry.startswith(("?? ", "!! ")):
            continue
        path = entry[3:].rstrip("/")
        parts = path.split("/")
        if (
            not path
            or len(path) > _MAX_PATH
            or path.startswith("-")
            or any(part in {"", ".", "..", ".git"} for part in parts)
            or any(ord(c) < 32 or ord(c) == 127 for c in path)
        ):
            continue
        if len(outputs) >= MAX_OUTPUTS:
            log.warning("setup left more than %d paths outside git: the rest may be committed", MAX_OUTPUTS)
            break
        outputs.append(path)
    return outputs


# Tool directories a setup commonly leaves at the top of the copy: put in front of PATH for the agent and
# the check, so `--check "python -m pytest -q"` finds the virtualenv's python.
_TOOL_DIRS = {".venv": ".venv/bin", "venv": "venv/bin", "node_modules": "node_modules/.bin"}


def tool_path(outputs: Sequence[str], workspace: str) -> str:
    """HARNESS_PATH for the setup's `outputs`: their tool directories, in the copy, `:`-separated."""
    return ":".join(f"{workspace}/{_TOOL_DIRS[o]}" for o in outputs if o in _TOOL_DIRS)


def cache_root(home: Path) -> Path:
    """The per-user package cache on the host (writable by the agent's uid, in a private parent)."""
    return home / "cache" / "packages"


def ensure_cache(home: Path) -> Path:
    root = cache_root(home)
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Like a run's directory: the agent's uid writes inside; the parent is private to the host user.
        root.parent.chmod(0o700)
        root.chmod(0o777)
    except OSError as exc:
        raise WorkspaceError(f"cannot prepare the package cache {root}: {exc.strerror}") from None
    return root
