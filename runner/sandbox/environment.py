"""Which image a run uses, and why (issue 17): decided first, built after.

`resolve_environment` decides, reading only git and the engine's image labels (so `--dry-run` can show
it without building anything): the image named by `--image` (or the configuration's `image`) wins, then
the repository's devcontainer.json (its `image` or `build`), then the agent's own harness image. A chosen
image that is not a harness image is *derived* (`IMG + agent`, runner.sandbox.derive). `prepare_environment`
then builds what the decision needs (the devcontainer's image, the derived image) and returns the tag.

On a backend whose cluster pulls the images (Kubernetes) nothing is derived or built: `--image` is run as
named, and `refuse_plain_image` stops a run whose image this machine's engine shows to be an ordinary one
(docs/kubernetes.md, "Images").

The devcontainer's setup commands and `containerEnv` come with the decision whichever image wins: they
describe the project, not the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from runner.backends.base import LABEL_CONTEXT, Backend, ImageStore
from runner.base.errors import ImageMissingError
from runner.record.gitops import HostGit
from runner.sandbox import derive, images
from runner.sandbox.devcontainer import (
    Devcontainer,
    DevcontainerBuild,
    build_devcontainer_image,
    build_tag,
    find_devcontainer,
)

ImageSource = Literal["flag", "config", "devcontainer", "default"]
ImageState = Literal["present", "stale", "buildable", "missing", "remote"]


class DevcontainerBuildPlan(BaseModel):
    """The devcontainer's own image, built from the base commit before it is derived."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(description="Its tag (from the content that goes into the build).")
    commit: str = Field(description="The commit its files are taken from.")
    build: DevcontainerBuild = Field(description="The devcontainer.json's build section.")


class EnvironmentPlan(BaseModel):
    """The environment of a run: the image, where it came from and why, and the devcontainer's part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="The image every container of the run uses (a derived tag when derived).")
    source: ImageSource = Field(description="What chose the image: --image, the configuration, devcontainer.json "
                                "or the agent's default.")  # fmt: skip
    base: str | None = Field(default=None, description="The image it is derived from; None: used as it is.")
    agent: str = Field(description="The agent it is derived for (custom: --agent-cmd).")
    state: ImageState = Field(description="The image before anything is built: present, stale (rebuilt), "
                              "buildable, missing (cannot be built), remote (a cluster pulls it).")  # fmt: skip
    devcontainer: str | None = Field(default=None, description="The devcontainer.json read, if any.")
    devcontainer_build: DevcontainerBuildPlan | None = Field(default=None, description="Its build, when it has one.")
    setup_commands: list[str] = Field(default_factory=list, description="The devcontainer's setup commands.")
    container_env: dict[str, str] = Field(default_factory=dict, description="The devcontainer's containerEnv.")
    notes: list[str] = Field(default_factory=list, description="What is ignored, one line each.")
    why: str = Field(description="Why this image, in one line.")


def resolve_environment(
    backend: Backend,
    *,
    repo: Path,
    base_commit: str,
    agent: str,
    default_image: str,
    image: str | None = None,
    image_source: Literal["flag", "config"] = "flag",
    use_devcontainer: bool = True,
) -> EnvironmentPlan:
    """Decide the run's environment (see the module's docstring). Builds nothing, pulls nothing.

    `agent` is the adapter's name (`custom` for --agent-cmd), `default_image` its harness image, `image` the
    image named by --image (`image_source="flag"`) or by the configuration (`"config"`). Raises UsageError
    for a malformed devcontainer.json (or an agent the harness cannot derive for), BackendError when the
    engine fails."""
    with HostGit(repo) as git:
        dc = find_devcontainer(git, base_commit) if use_devcontainer else None
        dc_build = (
            DevcontainerBuildPlan(tag=build_tag(git, base_commit, dc.build), commit=base_commit, build=dc.build)
            if dc is not None and dc.build is not None and image is None and isinstance(backend, ImageStore)
            else None
        )
    notes = list(dc.notes) if dc else []
    decision = _decide(backend, dc, dc_build, image, image_source, default_image, agent, notes)
    return EnvironmentPlan(
        image=decision.image,
        source=decision.source,
        base=decision.base,
        agent=agent,
        state=decision.state,
        devcontainer=dc.path if dc else None,
        devcontainer_build=dc_build if decision.source == "devcontainer" else None,
        setup_commands=dc.setup_commands if dc else [],
        container_env=dict(dc.container_env) if dc else {},
        notes=notes,
        why=decision.why,
    )


@dataclass(frozen=True)
class _Decision:
    image: str
    source: ImageSource
    base: str | None  # derived from it; None: used as it is
    state: ImageState
    why: str


def _decide(
    backend: Backend,
    dc: Devcontainer | None,
    dc_build: DevcontainerBuildPlan | None,
    image: str | None,
    image_source: Literal["flag", "config"],
    default_image: str,
    agent: str,
    notes: list[str],
) -> _Decision:
    if image is not None:
        named = "--image" if image_source == "flag" else "the configuration's image"
        if dc is not None and (dc.image or dc.build):
            notes.append(f"{dc.path}: its {'image' if dc.image else 'build'} is not used: {named} {image} wins")
        if not isinstance(backend, ImageStore):
            return _Decision(
                image, image_source, None, "remote", f"{named} {image}, used as named: the cluster pulls it"
            )
        if _harness_ready(backend, image):
            why = f"{named} {image}, a harness image, used as it is"
            return _Decision(image, image_source, None, _state(images.image_state(backend, image)), why)
        return _derived(backend, image, agent, image_source, f"{named} {image} is not a harness image")
    if dc is not None and (dc.image or dc.build):
        if not isinstance(backend, ImageStore):
            notes.append(f"{dc.path}: not used on the {backend.name} backend: derived images are built where "
                         "Docker runs (docs/kubernetes.md)")  # fmt: skip
        elif dc_build is not None:
            what = f"{dc.path} builds {dc_build.build.dockerfile}"
            built = backend.image_exists(dc_build.tag)
            return _derived(backend, dc_build.tag, agent, "devcontainer", what, built=built, origin="its image")
        elif dc.image is not None:
            return _derived(backend, dc.image, agent, "devcontainer", f"{dc.path} names the image {dc.image}")
    why = "the agent's own image: " + (
        "no --image given and no devcontainer.json" if dc is None else f"{dc.path} names no image to use"
    )
    return _Decision(default_image, "default", None, _state(images.image_state(backend, default_image)), why)


_STATES: dict[str, ImageState] = {state: state for state in get_args(ImageState)}


def _state(value: str) -> ImageState:
    return _STATES[value]


def _harness_ready(store: ImageStore, image: str) -> bool:
    """A harness image, or one built on one (it inherits the context-digest label), or a derived one:
    used as it is. Any other image is derived."""
    return images.name_for_tag(image) is not None or store.image_label(image, LABEL_CONTEXT) is not None


def _derived(
    backend: Backend,
    base: str,
    agent: str,
    source: ImageSource,
    what: str,
    *,
    built: bool = True,
    origin: str | None = None,
) -> _Decision:
    """`base + agent`; `built` False: the base is the devcontainer's image, which is not built yet."""
    tag = derive.derived_tag(base, agent)
    state = _state(derive.derive_state(backend, base, agent)) if built else "buildable"
    why = f"{what}: it runs as {tag} ({origin or base} + {agent}, derived by the harness)"
    return _Decision(tag, source, base, state, why)


def local_engine() -> ImageStore | None:
    """This machine's Docker engine, for a look at its images; None when there is none that answers."""
    from runner.backends import open_engine
    from runner.backends.docker.engine import DockerBackend

    local = open_engine()
    if not isinstance(local, DockerBackend):
        return None
    try:
        local.client.ping()  # once, without the retries of a run's calls: no engine is an answer here
    except Exception:  # no socket, no daemon, no permission: nothing to look at
        return None
    return local


def refuse_plain_image(
    backend: Backend,
    local: ImageStore | None,
    image: str,
    agent: str,
    image_source: Literal["flag", "config"] = "flag",
) -> None:
    """On a backend whose cluster pulls the images, `image` runs as named: the harness derives nothing
    there (a tag it built here is in no cluster). An image that `local` (this machine's engine) holds and
    that is not a harness image, nor built on one, nor derived, cannot run as it is (no relay, maybe no
    git, no agent user): ImageMissingError, in one line, naming the command that derives it. An image
    `local` does not hold (a registry's) is taken as named: the cluster pulls it."""
    if local is None or not local.image_exists(image) or _harness_ready(local, image):
        return
    named = "--image" if image_source == "flag" else "the configuration's image"
    name = "base" if agent == derive.CUSTOM else agent  # what `harness images build NAME --from` derives
    how = (
        f"derive it here with 'harness images build {name} --from {image} -q' (it prints the tag)"
        if name in images.image_names()
        else f"build it FROM {images.DEFAULT_IMAGE} (the {agent} agent has no 'harness images build --from')"
    )
    raise ImageMissingError(
        f"{named} {image} is not built on a harness image, and the {backend.name} backend derives nothing "
        f"(the cluster pulls its images): {how}, push that to the registry the cluster pulls from or load it "
        "into its nodes, and pass it with --image (docs/kubernetes.md, Images)"
    )


def prepare_environment(backend: Backend, plan: EnvironmentPlan, *, repo: Path) -> str:
    """Build what `plan` needs (the devcontainer's image, then the derived image; a missing or stale
    harness image) and return the image to run; what is up to date is reused.

    Raises ImageMissingError (with the reason in one line) when an image cannot be had, UsageError when
    the devcontainer's files are not at the plan's commit."""
    # A devcontainer's build is planned only on an engine with an image store (resolve_environment).
    if plan.devcontainer_build is not None and isinstance(backend, ImageStore):
        with HostGit(repo) as git:
            build_devcontainer_image(backend, git, plan.devcontainer_build.commit, plan.devcontainer_build.build)
    if plan.base is not None:
        return derive.derive(backend, plan.base, plan.agent)
    images.ensure(backend, plan.image)
    return plan.image


__all__ = [
    "Devcontainer",
    "DevcontainerBuildPlan",
    "EnvironmentPlan",
    "ImageSource",
    "local_engine",
    "prepare_environment",
    "refuse_plain_image",
    "resolve_environment",
]
