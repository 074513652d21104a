"""Harness images: where their build contexts live, when they are stale, and how they are built.

An image built by the harness carries a label with the digest of its build context (including the
host's extra CA certificates), so a changed Dockerfile or demo agent is rebuilt automatically. An
agent image layered on another harness image (`FROM harness-base:latest`) folds its base's digest
into its own, so a changed base makes it stale too, and its base is built first when needed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from runner.backends.base import LABEL_CONTEXT, LABEL_MANAGED, Backend, ImageStore
from runner.base import trust
from runner.base.errors import ImageMissingError, UsageError

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "harness-base:latest"
IMAGE_PREFIX = "harness-"


def _contexts_root() -> Path:
    package = Path(__file__).resolve().parent.parent  # runner/
    for candidate in (package / "images", package.parent / "images"):  # installed wheel, source checkout
        if candidate.is_dir():
            return candidate
    raise ImageMissingError("the harness's image build contexts are not installed")


def context_dir(name: str) -> Path:
    """The build context of the harness image `name` (images/NAME)."""
    return _contexts_root() / name


def image_names() -> list[str]:
    return sorted(p.name for p in _contexts_root().iterdir() if (p / "Dockerfile").is_file())


def tag_for(name: str) -> str:
    return f"{IMAGE_PREFIX}{name}:latest"


def name_for_tag(image: str) -> str | None:
    """The build-context name of a harness image tag, None for any other image."""
    repo, _, tag = image.partition(":")
    if not repo.startswith(IMAGE_PREFIX) or tag not in {"", "latest"}:
        return None
    name = repo[len(IMAGE_PREFIX) :]
    try:
        return name if name in image_names() else None
    except ImageMissingError:
        return None


def base_image(name: str) -> str:
    """The image the context of `name` builds FROM: its last stage's (earlier stages of an agent
    image start from the Debian image under the base). It must be present: nothing is pulled."""
    froms = [
        line.split()[1]
        for line in (_contexts_root() / name / "Dockerfile").read_text().splitlines()
        if line.strip().upper().startswith("FROM ")
    ]
    if not froms:
        raise ImageMissingError(f"the Dockerfile of image {name!r} has no FROM line")
    return froms[-1]


def harness_base(name: str) -> str | None:
    """The harness image `name` is layered on (its FROM is a harness image), None for the root."""
    return name_for_tag(base_image(name))


def _prepare_context(name: str, dest: Path) -> str:
    """Copy the build context of `name` into `dest` with the extra CAs; return its digest."""
    src = _contexts_root() / name
    # Bytecode left by a tool that imported a script of the context is not part of it.
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ca_dir = dest / "extra-ca"
    ca_dir.mkdir(exist_ok=True)
    for i, cert in enumerate(trust.extra_ca_files()):
        shutil.copyfile(cert, ca_dir / f"{i:02d}-{cert.stem}.crt")
    digest = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes() + b"\0")
    parent = harness_base(name)
    if parent is not None:  # a layered image is only as fresh as the base it was built on
        digest.update(b"FROM\0" + context_digest(parent).encode())
    return digest.hexdigest()[:16]


def context_digest(name: str) -> str:
    with tempfile.TemporaryDirectory(prefix="harness-ctx-") as tmp:
        return _prepare_context(name, Path(tmp))


def build_command(name: str) -> str:
    """What a user types to build the harness image `name`."""
    return f"harness images build {name}"


def build(backend: Backend, name: str) -> str:
    """Build the harness image `name` (from its context plus the host's extra CAs); return its tag.

    A missing or stale harness base is built first. The engine streams the build's progress to
    the log (stderr for a person). Raises ImageMissingError on an engine that keeps no images."""
    if name not in image_names():
        raise UsageError(f"no harness image named {name!r} (known: {', '.join(image_names())})")
    if not isinstance(backend, ImageStore):
        raise ImageMissingError(f"the {backend.name} backend builds no images: build {name} where Docker runs")
    return _build(backend, name)


def _build(store: ImageStore, name: str) -> str:
    parent = harness_base(name)
    if parent is not None:
        _ensure(store, tag_for(parent))
    tag = tag_for(name)
    with tempfile.TemporaryDirectory(prefix="harness-ctx-") as tmp:
        digest = _prepare_context(name, Path(tmp))
        store.build_image(context=Path(tmp), tag=tag, labels={LABEL_MANAGED: "1", LABEL_CONTEXT: digest})
    return tag


def image_state(backend: Backend, image: str) -> str:
    """'present', 'stale' (a harness image whose context or base changed), 'buildable', 'missing', or
    'remote' on an engine without an image store (the cluster pulls it; an image it cannot pull ends the
    iteration with the reason)."""
    return _state(backend, image) if isinstance(backend, ImageStore) else "remote"


def _state(store: ImageStore, image: str) -> str:
    name = name_for_tag(image)
    if name is None:
        return "present" if store.image_exists(image) else "missing"
    label = store.image_label(image, LABEL_CONTEXT)
    if label is None:
        parent = harness_base(name)
        if parent is not None:  # buildable when its base is (building the base first)
            return "missing" if _state(store, tag_for(parent)) == "missing" else "buildable"
        return "buildable" if store.image_exists(base_image(name)) else "missing"
    return "present" if label == context_digest(name) else "stale"


def _root_base(name: str) -> str:
    """The non-harness image at the bottom of `name`'s chain of harness bases (it is never pulled)."""
    parent = harness_base(name)
    return base_image(name) if parent is None else _root_base(parent)


def ensure(backend: Backend, image: str) -> None:
    """Make sure `image` can be run, building a missing or stale harness image (and its base). Nothing to do
    on an engine without an image store: the cluster pulls the image."""
    if isinstance(backend, ImageStore):
        _ensure(backend, image)


def _ensure(store: ImageStore, image: str) -> None:
    state = _state(store, image)
    name = name_for_tag(image)
    if state == "missing":
        hint = (
            f"its base {_root_base(name)!r} is missing: run 'make docker' (or scripts/ensure-docker.sh)"
            if name
            else "it is not a harness image that can be built"
        )
        raise ImageMissingError(f"image {image!r} is not present and {hint}")
    if state in {"buildable", "stale"}:
        assert name is not None  # noqa: S101 - image_state says so
        log.info(
            "image %s is %s; building it now, as '%s' does (progress follows)",
            image, "missing" if state == "buildable" else "out of date", build_command(name),
        )  # fmt: skip
        try:
            _build(store, name)
        except ImageMissingError as exc:
            hint = "" if "(retry with" in exc.message else f" (retry with '{build_command(name)}')"
            raise ImageMissingError(exc.message + hint) from None
