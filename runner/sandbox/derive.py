"""Any image as the base: `IMG + agent`, derived by the harness (issue 17 item 1).

`derive(backend, base, agent)` builds, from an ordinary local image, the image a run of `agent` needs:
the agent's CLI copied from its harness image (nothing downloaded again, except aider, which is installed
with the base's own Python), git and CA certificates if the base lacks them (with its apt-get or apk),
`harness-relay` from harness-base, the host's extra CA certificates, and the agent's user (uid 10001) with
the directories a run mounts. What cannot work is refused in one line: Claude Code on a musl (Alpine) base,
aider without Python >= 3.10 and its venv module, git missing with no package manager to install it.

The derived image is tagged `harness-derived/<agent>:<16 hex of the base's name>` and labelled with the
base image's id, the agent image's context digest and the digest of everything that went into it: the same
base and agent reuse it while it is up to date, and rebuild it under the same tag when either changed (the
old one is left dangling for `harness gc`). Nothing is pulled: the base must be present locally.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.backends.base import LABEL_CONTEXT, LABEL_MANAGED, LABEL_PREFIX, Backend, ImageStore
from runner.base import trust
from runner.base.errors import ImageMissingError, UsageError
from runner.base.layout import AGENT_UID, HOME, OUTBOX_DIR, PROMPT_DIR, RELAY, WORKSPACE
from runner.sandbox import images

log = logging.getLogger(__name__)

DERIVED_REPO = "harness-derived"
LABEL_BASE_ID = f"{LABEL_PREFIX}.base-id"  # the engine's id of the image it was derived from
LABEL_AGENT_DIGEST = f"{LABEL_PREFIX}.agent-digest"  # the context digest of the agent's harness image
LABEL_DERIVED_FROM = f"{LABEL_PREFIX}.derived-from"  # the base as the user named it
LABEL_DERIVED_AGENT = f"{LABEL_PREFIX}.derived-agent"
# The line the setup script prints before it refuses a base (the build then fails with it as its last output).
REFUSED = "harness-refused: "
SETUP_DIR = "/tmp/harness-derive"
CUSTOM = "custom"  # `--agent-cmd`: what every run needs, and no agent CLI


@dataclass(frozen=True)
class Recipe:
    """What one agent needs on top of a base image."""

    image: str  # the harness image (its build-context name) its CLI comes from
    copies: tuple[tuple[str, str], ...] = ()  # (path in that image, path in the derived one)
    env: tuple[tuple[str, str], ...] = ()  # as its harness image sets them (its Dockerfile's last stage)
    version_arg: str | None = None  # the ARG of its Dockerfile that pins the CLI's version


RECIPES: dict[str, Recipe] = {
    "claude-code": Recipe(
        image="claude-code",
        copies=(("/usr/local/bin/claude", "/usr/local/bin/claude"),),
        env=(
            ("DISABLE_AUTOUPDATER", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("DISABLE_BUG_COMMAND", "1"),
        ),
        version_arg="CLAUDE_CODE_VERSION",
    ),
    # Codex's binaries are static (musl): they run on any Linux base.
    "codex": Recipe(
        image="codex",
        copies=(("/opt/codex", "/opt/codex"), ("/usr/local/bin/codex", "/usr/local/bin/codex")),
        env=(
            ("PATH", "/opt/codex/codex-path:$PATH"),
            ("CODEX_HOME", f"{HOME}/.codex"),
            ("CODEX_MANAGED_BY_NPM", "1"),
        ),
        version_arg="CODEX_VERSION",
    ),
    # aider is Python: its virtualenv is made with the base's own python3 (harness-aider's would not fit).
    "aider": Recipe(
        image="aider",
        env=(
            ("PATH", "/opt/aider/bin:$PATH"),
            ("AIDER_CHECK_UPDATE", "false"),
            ("AIDER_ANALYTICS", "false"),
            ("AIDER_ANALYTICS_DISABLE", "true"),
            ("AIDER_SHOW_RELEASE_NOTES", "false"),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ),
        version_arg="AIDER_VERSION",
    ),
    "demo": Recipe(image="base", copies=(("/usr/local/bin/harness-demo-agent", "/usr/local/bin/harness-demo-agent"),)),
    CUSTOM: Recipe(image="base"),
}


def agents() -> list[str]:
    return sorted(RECIPES)


def recipe(agent: str) -> Recipe:
    found = RECIPES.get(agent)
    if found is None:
        raise UsageError(f"no agent {agent!r} to derive an image for (known: {', '.join(agents())})")
    return found


def derived_tag(base: str, agent: str) -> str:
    """The tag of `base + agent`: one per base name and agent, rebuilt in place when stale."""
    recipe(agent)
    return f"{DERIVED_REPO}/{agent}:{hashlib.sha256(base.encode()).hexdigest()[:16]}"


def pinned_version(agent: str) -> str | None:
    """The CLI version the agent's harness image pins (its Dockerfile's `ARG NAME_VERSION=...`)."""
    arg = recipe(agent).version_arg
    if arg is None:
        return None
    dockerfile = images.context_dir(recipe(agent).image) / "Dockerfile"
    match = re.search(rf"^ARG {arg}=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------- the generated files


def dockerfile(base: str, base_id: str, agent: str) -> str:
    """The Dockerfile of `base + agent`. It starts FROM the base's id, not its name, so the labels always
    describe what was built even if the name moves meanwhile."""
    spec = recipe(agent)
    version = pinned_version(agent) or ""
    lines = [
        f"# Generated by the harness (runner/sandbox/derive.py): {base} + {agent}.",
        f"FROM {base_id}",
        "USER 0:0",  # by number: a base may have no /etc/passwd yet
        f"COPY harness-derive/ {SETUP_DIR}/",
        f"COPY --from={images.DEFAULT_IMAGE} /usr/local/bin/{RELAY} /usr/local/bin/{RELAY}",
        *(f"COPY --from={images.tag_for(spec.image)} {src} {dest}" for src, dest in spec.copies),
        # The exec form: the base's SHELL is not ours to trust; /bin/sh is needed all the same.
        f'RUN ["/bin/sh", "{SETUP_DIR}/setup.sh", "{agent}", "{version}"]',
    ]
    if spec.env:
        lines.append("ENV " + " \\\n    ".join(f"{name}={value}" for name, value in spec.env))
    lines += [
        f'LABEL io.solo-harness.agent="{agent}" io.solo-harness.agent-version="{version}"',
        # The harness gives every container its command: a base's entrypoint would wrap it.
        "ENTRYPOINT []",
        'CMD ["sh"]',
        f"USER {AGENT_UID}:{AGENT_UID}",
        f"WORKDIR {WORKSPACE}",
    ]
    return "\n".join(lines) + "\n"


# POSIX sh, run as root at build time: refuse what cannot work (one line after REFUSED), install git and
# CA certificates where missing, trust the host's extra CAs, install aider, create the agent's user, check
# that the agent's CLI starts. $1: the agent, $2: its pinned version.
SETUP_SCRIPT = rf"""#!/bin/sh
# Generated by the harness (runner/sandbox/derive.py).
set -eu
agent=$1
version=$2
here={SETUP_DIR}
uid={AGENT_UID}
refuse() {{ echo "{REFUSED}$*"; exit 3; }}
has() {{ command -v "$1" >/dev/null 2>&1; }}
oneline() {{ printf '%s' "$1" | tr '\n' ' ' | cut -c1-200; }}

musl=""
for f in /lib/ld-musl-*; do [ -e "$f" ] && musl=$f; done
case $agent in
  claude-code)
    [ -z "$musl" ] || refuse "Claude Code's native binary needs glibc, and this image is musl-based ($musl:" \
      "Alpine?): use a Debian- or Ubuntu-based image" ;;
  demo)
    has python3 || refuse "the demo agent is a python3 script, and this image has no python3" ;;
  aider)
    has python3 || refuse "aider needs python3 >= 3.10 with its venv module, and this image has no python3"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || refuse "aider needs python3 >= 3.10, and this image has $(python3 -V 2>&1)"
    python3 -c 'import ensurepip, venv' 2>/dev/null \
      || refuse "aider needs python3's venv and ensurepip modules, which this image lacks (Debian, Ubuntu: add" \
        "the python3-venv package)" ;;
esac

# The relay comes from harness-base: a script needs its interpreter here.
first=""
IFS= read -r first < /usr/local/bin/{RELAY} || :
case $first in
  '#!'*)
    interpreter=${{first#'#!'}}
    interpreter=${{interpreter%% *}}
    [ -x "$interpreter" ] || refuse "{RELAY} from {images.DEFAULT_IMAGE} is a script for $interpreter, which this" \
      "image lacks: rebuild {images.DEFAULT_IMAGE} with the static relay (harness images build base)" ;;
esac

bundle() {{
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    [ -s "$f" ] && {{ echo "$f"; return 0; }}
  done
  return 1
}}
need=""
has git || need="git"
bundle >/dev/null || need="$need ca-certificates"
mkdir -p /usr/local/share/ca-certificates/harness
for cert in "$here"/extra-ca/*.crt; do [ -f "$cert" ] && cp "$cert" /usr/local/share/ca-certificates/harness/; done
if [ -n "$need" ]; then
  if has apt-get; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
  elif has apk; then
    # shellcheck disable=SC2086
    apk add --no-cache $need >/dev/null
  elif ! has git; then
    refuse "this image has no git, and neither apt-get nor apk to install it: add git to the image"
  fi
fi
has git || refuse "this image still has no git after installing it"
if has update-ca-certificates; then update-ca-certificates >/dev/null 2>&1 || :; fi

if [ "$agent" = aider ]; then
  cert=$(bundle) && export PIP_CERT="$cert"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
  python3 -m venv /opt/aider
  /opt/aider/bin/pip install -q "aider-chat==$version"
fi

# The agent's user and group (uid and gid {AGENT_UID}): an entry that has the id already is kept.
name_of() {{ while IFS=: read -r n _ i _; do [ "$i" = "$2" ] && {{ echo "$n"; return 0; }}; done < "$1"; return 1; }}
taken() {{ while IFS=: read -r n _; do [ "$n" = "$2" ] && return 0; done < "$1"; return 1; }}
touch /etc/passwd /etc/group
if ! name_of /etc/group "$uid" >/dev/null; then
  group=agent; taken /etc/group agent && group=harness-agent
  echo "$group:x:$uid:" >> /etc/group
fi
if ! name_of /etc/passwd "$uid" >/dev/null; then
  user=agent; taken /etc/passwd agent && user=harness-agent
  shell=/bin/sh; [ -x /bin/bash ] && shell=/bin/bash
  echo "$user:x:$uid:$uid:harness agent:{HOME}:$shell" >> /etc/passwd
  if [ -f /etc/shadow ]; then echo "$user:!:1:0:99999:7:::" >> /etc/shadow; fi
fi
mkdir -p {WORKSPACE} {PROMPT_DIR} {OUTBOX_DIR} {HOME}
chown "$uid:$uid" {WORKSPACE} {HOME}
chmod 0755 /usr/local/bin/{RELAY}

# The CLI must start here (a missing library shows now, not at the first iteration).
probe() {{
  if ! out=$(HOME="$here/home" CODEX_HOME="$here/home/codex" GIT_PYTHON_REFRESH=quiet "$@" 2>&1); then
    refuse "$1 does not start in this image: $(oneline "$out")"
  fi
}}
mkdir -p "$here/home"
case $agent in
  claude-code) probe claude --version ;;
  codex) probe codex --version ;;
  aider) probe /opt/aider/bin/aider --version ;;
esac
rm -rf "$here"
"""


def _prepare(base: str, base_id: str, agent: str, dest: Path) -> str:
    """Write the build context of `base + agent` into `dest`; return the digest its label carries."""
    (dest / "Dockerfile").write_text(dockerfile(base, base_id, agent))
    setup = dest / "harness-derive"
    (setup / "extra-ca").mkdir(parents=True)
    (setup / "setup.sh").write_text(SETUP_SCRIPT)
    for i, cert in enumerate(trust.extra_ca_files()):
        shutil.copyfile(cert, setup / "extra-ca" / f"{i:02d}-{cert.stem}.crt")
    digest = hashlib.sha256()
    digest.update(f"{base_id}\0{agent_digest(agent)}\0".encode())
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def agent_digest(agent: str) -> str:
    """The context digest of the harness image the agent's CLI comes from (it folds in harness-base's,
    where the relay comes from)."""
    return images.context_digest(recipe(agent).image)


def expected_digest(base: str, base_id: str, agent: str) -> str:
    with tempfile.TemporaryDirectory(prefix="harness-derive-") as tmp:
        return _prepare(base, base_id, agent, Path(tmp))


# --------------------------------------------------------------------------------------------- building


def derive_state(backend: Backend, base: str, agent: str) -> str:
    """'present' (up to date), 'stale' (the base or the agent's image changed), 'buildable', 'missing' (the
    base is not a local image) or 'remote' (a backend whose images a cluster pulls). Builds nothing."""
    recipe(agent)
    if not isinstance(backend, ImageStore):
        return "remote"
    base_id = backend.image_id(base)
    if base_id is None:
        return "missing"
    label = backend.image_label(derived_tag(base, agent), LABEL_CONTEXT)
    if label is None:
        return "buildable"
    return "present" if label == expected_digest(base, base_id, agent) else "stale"


def missing_base(base: str) -> ImageMissingError:
    return ImageMissingError(
        f"image {base!r} is not present locally and the harness pulls nothing: pull or build it first "
        f"(docker pull {base})"
    )


def derive(backend: Backend, base: str, agent: str) -> str:
    """Make `base + agent` (see the module's docstring) and return its tag; an up-to-date one is reused.

    Raises UsageError for an unknown agent, ImageMissingError when the base is absent, when it cannot
    hold the agent (one line: why), or when the build fails."""
    recipe(agent)
    if not isinstance(backend, ImageStore):
        raise ImageMissingError(
            f"the {backend.name} backend builds no images: derive {base} + {agent} where Docker runs "
            f"('harness images build {_image_name(agent)} --from {base}') and push it where the cluster pulls from"
        )
    base_id = backend.image_id(base)
    if base_id is None:
        raise missing_base(base)
    tag = derived_tag(base, agent)
    with tempfile.TemporaryDirectory(prefix="harness-derive-") as tmp:
        context = Path(tmp)
        digest = _prepare(base, base_id, agent, context)
        if backend.image_label(tag, LABEL_CONTEXT) == digest:
            log.info("image %s (%s + %s) is up to date", tag, base, agent)
            return tag
        # Where the relay and the agent's CLI come from: built first when missing or out of date (aider's
        # image is not: nothing is copied from it).
        images.ensure(backend, images.DEFAULT_IMAGE)
        if recipe(agent).copies:
            images.ensure(backend, images.tag_for(recipe(agent).image))
        log.info("deriving %s from %s for %s (progress follows)", tag, base, agent)
        labels = {
            LABEL_MANAGED: "1",
            LABEL_CONTEXT: digest,
            LABEL_BASE_ID: base_id,
            LABEL_AGENT_DIGEST: agent_digest(agent),
            LABEL_DERIVED_FROM: base,
            LABEL_DERIVED_AGENT: agent,
        }
        try:
            backend.build_image(context=context, tag=tag, labels=labels)
        except ImageMissingError as exc:
            raise ImageMissingError(_reason(exc.message, base, agent)) from None
    return tag


def _image_name(agent: str) -> str:
    """The NAME of `harness images build NAME --from IMG` that derives for `agent`."""
    return "base" if agent == CUSTOM else agent


def _reason(message: str, base: str, agent: str) -> str:
    """A failed derivation in one line: the setup script's refusal when it refused."""
    prefix = f"cannot derive an image for {agent} from {base}: "
    _, refused, reason = message.partition(REFUSED)
    if refused:
        return prefix + reason.removesuffix(")").strip()
    if '"/bin/sh"' in message and "no such file" in message:
        return prefix + "it has no /bin/sh (the harness and the agents run their commands with sh)"
    return prefix + message


def agent_for_image(name: str) -> str:
    """What `harness images build NAME --from IMG` derives: the agent of the harness image NAME, and for
    `base` what `--agent-cmd` needs (git, the relay, the agent's user). Raises UsageError for another NAME."""
    known = images.image_names()
    if name not in known:
        raise UsageError(f"no harness image named {name!r} (known: {', '.join(known)})")
    return CUSTOM if name == "base" else name
