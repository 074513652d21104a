"""devcontainer.json: the repository's own environment, read at a commit (issue 17 item 2).

The file is read from git's objects at the session's base commit (`.devcontainer/devcontainer.json`, else
`.devcontainer.json`), never from the working tree: a link there could point anywhere on the host, and
the run works on the commit, not on uncommitted edits. It is JSON with comments and trailing commas
(JSONC), parsed by a small scanner here: the two extensions are all the format adds to JSON, and
json's own errors then keep their line and column.

What the harness uses: `image`, or `build` (`dockerfile`, `context`, `args`, `target`; paths relative to
the file's folder), `containerEnv`, and `onCreateCommand`, `updateContentCommand`, `postCreateCommand`
(the setup phase). Everything else present that would matter is named in one line each (`notes`) and
ignored: features come from a registry, the user is always the agent's, ports are not forwarded, mounts
and run arguments would weaken the container, `initializeCommand` would run on the host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runner.backends.base import LABEL_MANAGED, LABEL_PREFIX, ImageStore
from runner.base.errors import ImageMissingError, UsageError
from runner.base.layout import WORKSPACE
from runner.record.gitops import HostGit

log = logging.getLogger(__name__)

CANDIDATES = (".devcontainer/devcontainer.json", ".devcontainer.json")  # the spec's order
MAX_BYTES = 256 * 1024
BUILD_REPO = "harness-devcontainer"
LABEL_DEVCONTAINER = f"{LABEL_PREFIX}.devcontainer-digest"


class DevcontainerBuild(BaseModel):
    """The `build` section, its paths made relative to the repository's root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dockerfile: str = Field(description="The Dockerfile, relative to the repository's root.")
    context: str = Field(description="The build context, relative to the repository's root ('' for the root).")
    args: dict[str, str] = Field(default_factory=dict, description="Build arguments.")
    target: str | None = Field(default=None, description="The stage to build (default: the last).")


class Devcontainer(BaseModel):
    """What the harness takes from a devcontainer.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Where the file is, relative to the repository's root.")
    image: str | None = Field(default=None, description="`image`: the base image, as named.")
    build: DevcontainerBuild | None = Field(default=None, description="`build`: how to build the base image.")
    container_env: dict[str, str] = Field(default_factory=dict, description="`containerEnv`.")
    on_create: list[str] = Field(default_factory=list, description="`onCreateCommand`, as shell commands.")
    update_content: list[str] = Field(default_factory=list, description="`updateContentCommand`, as shell commands.")
    post_create: list[str] = Field(default_factory=list, description="`postCreateCommand`, as shell commands.")
    notes: list[str] = Field(default_factory=list, description="What is present and ignored, one line each.")

    @property
    def setup_commands(self) -> list[str]:
        """The setup phase's commands, in the order a dev container runs them."""
        return [*self.on_create, *self.update_content, *self.post_create]


# ------------------------------------------------------------------------------------------------ JSONC


def strip_jsonc(text: str) -> str:
    """JSON from JSONC: comments (`//`, `/* */`) and trailing commas become spaces, so every other
    character keeps its line and column. Strings are left as they are, escapes included.
    Raises ValueError for a comment that never ends."""
    return _drop_trailing_commas(_blank_comments(text))


def _blank_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            end = _string_end(text, i)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                line = text.count("\n", 0, i) + 1
                raise ValueError(f"a /* comment at line {line} never ends")
            out.append(re.sub(r"[^\n]", " ", text[i : end + 2]))
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _drop_trailing_commas(text: str) -> str:
    chars = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
            continue
        if c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "]}":
                chars[i] = " "
        i += 1
    return "".join(chars)


def _string_end(text: str, start: int) -> int:
    """The index just past the string that opens at `start` (or the end of the text: json reports it)."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        elif text[i] == "\n":  # a string never spans lines in JSON: let json say so there
            return i
        else:
            i += 1
    return len(text)


def loads_jsonc(text: str, *, path: str) -> dict[str, Any]:
    """The JSONC object in `text`. Raises UsageError, in one line naming `path`, for anything else."""
    try:
        data = json.loads(strip_jsonc(text.removeprefix("\ufeff")))
    except ValueError as exc:  # JSONDecodeError is a ValueError, with its line and column
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"{path}: not valid JSON (comments and trailing commas allowed): {detail}{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be an object, not {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------ parsing

_IGNORED = {
    "features": "features are fetched from a registry and cannot be installed here",
    "overrideFeatureInstallOrder": "features are fetched from a registry and cannot be installed here",
    "remoteUser": "the agent always runs as uid 10001, not as remoteUser",
    "containerUser": "the agent always runs as uid 10001, not as containerUser",
    "updateRemoteUserUID": "the agent always runs as uid 10001",
    "forwardPorts": "ports are not forwarded: the agent's container has no network",
    "appPort": "ports are not published: the agent's container has no network",
    "portsAttributes": "ports are not forwarded: the agent's container has no network",
    "otherPortsAttributes": "ports are not forwarded: the agent's container has no network",
    "mounts": "mounts are not made: the container sees only its own copy of the repository",
    "workspaceMount": "the repository's copy is always mounted at /workspace",
    "workspaceFolder": "the repository's copy is always at /workspace",
    "runArgs": "docker run arguments would change the container's hardening",
    "privileged": "a privileged container would undo the hardening",
    "capAdd": "added capabilities would undo the hardening",
    "securityOpt": "security options would change the hardening",
    "init": "the harness always runs an init process",
    "initializeCommand": "it runs on the host, which the harness never lets a repository do",
    "postStartCommand": "it runs each time an editor starts the container; the harness has only the setup phase",
    "postAttachCommand": "it runs when an editor attaches; the harness has only the setup phase",
    "dockerComposeFile": "Docker Compose is not supported (use image or build)",
    "service": "Docker Compose is not supported (use image or build)",
    "runServices": "Docker Compose is not supported (use image or build)",
    "remoteEnv": "remoteEnv is not applied (containerEnv is)",
    "hostRequirements": "the harness's limits apply (--cpus, --memory, --max-disk)",
    "secrets": "no secret reaches the agent's container from a repository's file",
}
# Present in many files and meaningless for an unattended agent: not worth a line.
_SILENT = {"$schema", "name", "customizations", "shutdownAction", "overrideCommand", "waitFor", "userEnvProbe"}
_USED = {"image", "build", "dockerFile", "context", "containerEnv", "onCreateCommand", "updateContentCommand",
         "postCreateCommand"}  # fmt: skip
_BUILD_KEYS = {"dockerfile", "context", "args", "target"}
_COMMANDS = {
    "onCreateCommand": "on_create",
    "updateContentCommand": "update_content",
    "postCreateCommand": "post_create",
}
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_devcontainer(text: str, *, path: str, workspace_name: str = "workspace") -> Devcontainer:
    """Parse the devcontainer.json found at `path` (relative to the repository's root). Pure.

    `workspace_name` is what `${localWorkspaceFolderBasename}` stands for. Raises UsageError in one line
    for malformed JSON or a malformed property the harness uses."""
    data = loads_jsonc(text, path=path)
    notes: list[str] = []
    note = notes.append
    for key in data:
        if key in _IGNORED:
            note(f"{path}: {key} ignored: {_IGNORED[key]}")
        elif key not in _USED | _SILENT:
            note(f"{path}: {key} is not a property the harness knows; ignored")
    folder = posixpath.dirname(path)
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise UsageError(f"{path}: image must be a non-empty string")
    build = _build(data, path=path, folder=folder, note=note)
    if image and build:
        note(f"{path}: both image and build are given; build is used, as a dev container does")
        image = None
    substitutions = {
        "containerWorkspaceFolder": WORKSPACE,
        "containerWorkspaceFolderBasename": posixpath.basename(WORKSPACE),
        "localWorkspaceFolderBasename": workspace_name,
    }
    env = _container_env(data.get("containerEnv"), path=path, substitutions=substitutions, note=note)
    commands = {field: _commands(data.get(key), path=path, key=key) for key, field in _COMMANDS.items()}
    return Devcontainer(path=path, image=image, build=build, container_env=env, notes=notes, **commands)


def _build(data: dict[str, Any], *, path: str, folder: str, note: Callable[[str], None]) -> DevcontainerBuild | None:
    section = data.get("build")
    if section is None and "dockerFile" in data:  # the spec's older top-level form
        section = {"dockerfile": data["dockerFile"], **({"context": data["context"]} if "context" in data else {})}
    elif "dockerFile" in data or "context" in data:
        note(f"{path}: the top-level dockerFile and context are ignored: build is given")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise UsageError(f"{path}: build must be an object")
    for key in section:
        if key not in _BUILD_KEYS:
            note(f"{path}: build.{key} ignored: the harness builds with dockerfile, context, args and target only")
    dockerfile = section.get("dockerfile")
    if not isinstance(dockerfile, str) or not dockerfile.strip():
        raise UsageError(f"{path}: build.dockerfile must name the Dockerfile")
    context = section.get("context", ".")
    if not isinstance(context, str):
        raise UsageError(f"{path}: build.context must be a string")
    target = section.get("target")
    if target is not None and not isinstance(target, str):
        raise UsageError(f"{path}: build.target must be a string")
    args = section.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
        raise UsageError(f"{path}: build.args must be an object of strings")
    kept = {}
    for name, value in args.items():
        if _VARIABLE.search(value):
            note(f"{path}: build.args.{name} ignored: it uses a variable (${{...}}), which the harness does not expand")
        else:
            kept[name] = value
    return DevcontainerBuild(
        dockerfile=_inside_repo(folder, dockerfile, path=path, what="build.dockerfile"),
        context=_inside_repo(folder, context, path=path, what="build.context"),
        args=kept,
        target=target or None,
    )


def _inside_repo(folder: str, relative: str, *, path: str, what: str) -> str:
    """`relative` (to the devcontainer.json's folder) as a path from the repository's root."""
    if relative.startswith("/") or "\\" in relative:
        raise UsageError(f"{path}: {what} must be a relative path with '/' separators, not {relative!r}")
    joined = posixpath.normpath(posixpath.join(folder, relative))
    if joined == ".":
        return ""
    if joined == ".." or joined.startswith("../"):
        raise UsageError(f"{path}: {what} {relative!r} is outside the repository")
    return joined


def _container_env(
    value: object, *, path: str, substitutions: dict[str, str], note: Callable[[str], None]
) -> dict[str, str]:  # fmt: skip
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UsageError(f"{path}: containerEnv must be an object of strings")
    env: dict[str, str] = {}
    for name, raw in value.items():
        if not _ENV_NAME.match(name):
            note(f"{path}: containerEnv {name!r} ignored: not a variable name")
            continue
        if name.startswith("HARNESS_"):
            note(f"{path}: containerEnv {name} ignored: HARNESS_ variables are the harness's own")
            continue
        unknown = [m.group(1) for m in _VARIABLE.finditer(raw) if m.group(1) not in substitutions]
        if unknown:
            # ${localEnv:...} would copy the host's environment (its secrets) into the container: never.
            note(f"{path}: containerEnv {name} ignored: ${{{unknown[0]}}} is not expanded here")
            continue
        env[name] = _VARIABLE.sub(lambda m: substitutions[m.group(1)], raw)
    return env


def _commands(value: object, *, path: str, key: str) -> list[str]:
    """A lifecycle command as shell commands: a string is one, an array is one (exec form, quoted), an
    object is one per named entry, in its order."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [
            command for name, item in value.items() for command in _one_command(item, path=path, key=f"{key}.{name}")
        ]
    return _one_command(value, path=path, key=key)


def _one_command(value: object, *, path: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [shlex.join(value)] if value else []
    raise UsageError(f"{path}: {key} must be a string, an array of strings, or an object of those")


# ------------------------------------------------------------------------------------- reading at a commit


def find_devcontainer(git: HostGit, commit: str) -> Devcontainer | None:
    """The repository's devcontainer.json at `commit`, parsed; None when it has none. Read from git only.

    Raises UsageError when the file is malformed, too large, or not a regular file."""
    for candidate in CANDIDATES:
        entry = git.tree_entry(commit, candidate)
        if entry is None:
            continue
        if not entry.is_file:
            what = "a symbolic link" if entry.mode == "120000" else f"not a regular file (mode {entry.mode})"
            raise UsageError(f"{candidate} is {what} in commit {commit[:12]}: the harness reads only a regular file")
        if (entry.size or 0) > MAX_BYTES:
            raise UsageError(f"{candidate} is over {MAX_BYTES // 1024} KiB: not read")
        data = git.blob(commit, candidate, limit=MAX_BYTES)
        if data is None:
            raise UsageError(f"{candidate} could not be read from commit {commit[:12]}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{candidate}: not UTF-8 text") from None
        return parse_devcontainer(text, path=candidate, workspace_name=git.repo.name)
    return None


def build_tag(git: HostGit, commit: str, build: DevcontainerBuild) -> str:
    """The tag of the devcontainer's built image: from the content that goes into the build (the context's
    tree, the Dockerfile's blob, args and target), so the same content is built once. Reads git only.

    Raises UsageError when the context is not a directory or the Dockerfile not a file at `commit`."""
    context = git.tree_entry(commit, build.context)
    if context is None or context.kind != "tree":
        raise UsageError(
            f"devcontainer build.context {build.context or '.'!r} is not a directory in commit {commit[:12]}"
        )
    dockerfile = git.tree_entry(commit, build.dockerfile)
    if dockerfile is None or not dockerfile.is_file:
        raise UsageError(f"devcontainer build.dockerfile {build.dockerfile!r} is not a file in commit {commit[:12]}")
    digest = hashlib.sha256(
        json.dumps(
            [context.sha, dockerfile.sha, _relative(build.dockerfile, build.context), sorted(build.args.items()),
             build.target],
        ).encode()
    )  # fmt: skip
    return f"{BUILD_REPO}:{digest.hexdigest()[:16]}"


def _relative(path: str, context: str) -> str | None:
    """`path` inside `context`, None when it is outside it."""
    if not context:
        return path
    return path[len(context) + 1 :] if path.startswith(context + "/") else None


def build_devcontainer_image(store: ImageStore, git: HostGit, commit: str, build: DevcontainerBuild) -> str:
    """Build the devcontainer's image from the files of `commit` (extracted with git archive into a temp
    directory: never the working tree), with its Dockerfile, args and target; return its tag. An image
    with the same content is reused. Nothing is pulled: its FROM images must be present locally.

    Raises UsageError for a context or Dockerfile missing at `commit`, ImageMissingError when the build fails."""
    tag = build_tag(git, commit, build)
    if store.image_exists(tag):
        log.info("image %s (the devcontainer's build) is up to date", tag)
        return tag
    with tempfile.TemporaryDirectory(prefix="harness-devcontainer-") as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        git.archive(f"{commit}:{build.context}" if build.context else commit, context)
        inside = _relative(build.dockerfile, build.context)
        if inside is not None:
            dockerfile = inside
        else:  # a Dockerfile outside the context: the engine gets it beside the context
            text = git.blob(commit, build.dockerfile, limit=MAX_BYTES)
            if text is None:
                raise UsageError(f"devcontainer build.dockerfile {build.dockerfile!r} is over {MAX_BYTES // 1024} KiB")
            outside = Path(tmp) / "Dockerfile"
            outside.write_bytes(text)
            dockerfile = str(outside)
        log.info("building the devcontainer's image %s from %s at %s (progress follows)", tag, build.dockerfile,
                 commit[:12])  # fmt: skip
        try:
            store.build_image(
                context=context, tag=tag, labels={LABEL_MANAGED: "1", LABEL_DEVCONTAINER: tag.partition(":")[2]},
                dockerfile=dockerfile, buildargs=build.args or None, target=build.target,
            )  # fmt: skip
        except ImageMissingError as exc:
            raise ImageMissingError(f"the devcontainer's image ({build.dockerfile}): {exc.message}") from None
    return tag
