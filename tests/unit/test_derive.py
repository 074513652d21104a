"""Deriving `IMG + agent`: the generated Dockerfile and script, the tag and labels, reuse and rebuild, and the
refusals' one line (with the fake backend; tests/integration/test_derive.py builds for real)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from runner.agents import ADAPTERS
from runner.backends.fake import FakeBackend, FakeCluster
from runner.base import trust
from runner.base.errors import ImageMissingError, UsageError
from runner.sandbox import derive, images
from runner.sandbox.derive import CUSTOM, RECIPES, SETUP_SCRIPT, derive_state, derived_tag, dockerfile, recipe

BASE = "python:3.12-slim"
BASE_ID = "sha256:" + "ab" * 32


def _final_stage_env(name: str) -> dict[str, str]:
    """The ENV of the last stage of images/NAME/Dockerfile (continuation lines joined)."""
    text = (images.context_dir(name) / "Dockerfile").read_text().replace("\\\n", " ")
    stage = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in stage.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in line[4:].split()))
    return env


@pytest.mark.parametrize("agent", ["claude-code", "codex", "aider"])
def test_the_recipe_sets_what_the_agents_own_image_sets(agent: str) -> None:
    assert dict(recipe(agent).env) == _final_stage_env(recipe(agent).image)


def test_every_agent_adapter_has_a_recipe() -> None:
    assert set(RECIPES) == {*ADAPTERS, CUSTOM}
    assert all(recipe(a).image in images.image_names() for a in RECIPES)


def test_an_unknown_agent_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no agent 'nope' to derive an image for"):
        derived_tag(BASE, "nope")


def test_the_tag_is_one_per_base_name_and_agent() -> None:
    tag = derived_tag(BASE, "claude-code")
    assert re.fullmatch(r"harness-derived/claude-code:[0-9a-f]{16}", tag)
    assert derived_tag(BASE, "claude-code") == tag
    assert derived_tag("python:3.13-slim", "claude-code") != tag
    assert derived_tag(BASE, "codex").startswith("harness-derived/codex:")


def test_the_dockerfile_starts_from_the_bases_id_and_ends_as_the_agents_user() -> None:
    text = dockerfile(BASE, BASE_ID, "claude-code")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == f"FROM {BASE_ID}" and lines[1] == "USER 0:0"
    assert "COPY --from=harness-base:latest /usr/local/bin/harness-relay /usr/local/bin/harness-relay" in lines
    assert "COPY --from=harness-claude-code:latest /usr/local/bin/claude /usr/local/bin/claude" in lines
    version = derive.pinned_version("claude-code")
    assert version and f'RUN ["/bin/sh", "/tmp/harness-derive/setup.sh", "claude-code", "{version}"]' in lines
    assert "ENTRYPOINT []" in lines
    assert lines[-2:] == ["USER 10001:10001", "WORKDIR /workspace"]
    assert "DISABLE_AUTOUPDATER=1" in text


def test_codex_copies_its_vendored_tree_and_wrapper() -> None:
    text = dockerfile(BASE, BASE_ID, "codex")
    assert "COPY --from=harness-codex:latest /opt/codex /opt/codex" in text
    assert "COPY --from=harness-codex:latest /usr/local/bin/codex /usr/local/bin/codex" in text
    assert "PATH=/opt/codex/codex-path:$PATH" in text


def test_aider_and_custom_copy_no_cli() -> None:
    assert "COPY --from=harness-aider" not in dockerfile(BASE, BASE_ID, "aider")
    assert dockerfile(BASE, BASE_ID, CUSTOM).count("COPY --from=") == 1  # the relay only
    assert "harness-demo-agent" in dockerfile(BASE, BASE_ID, "demo")


def test_the_setup_script_is_valid_posix_sh() -> None:
    proc = subprocess.run(["sh", "-n"], input=SETUP_SCRIPT, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_setup_script_refuses_what_cannot_work_in_one_line() -> None:
    refusals = re.findall(r'refuse "(.*?)"(?: \\\n\s+"(.*?)")?', SETUP_SCRIPT)
    assert len(refusals) >= 7
    assert "musl-based" in SETUP_SCRIPT and "/lib/ld-musl-*" in SETUP_SCRIPT
    assert "neither apt-get nor apk" in SETUP_SCRIPT


# --------------------------------------------------------------------------------------------- with a backend


@pytest.fixture
def backend() -> FakeBackend:
    b = FakeBackend()
    b.images.add(BASE)
    return b


def test_derive_builds_the_harness_images_it_copies_from_then_the_derived_one(backend: FakeBackend) -> None:
    tag = derive.derive(backend, BASE, "claude-code")
    assert tag == derived_tag(BASE, "claude-code")
    assert [b.tag for b in backend.builds] == ["harness-base:latest", "harness-claude-code:latest", tag]
    built = backend.builds[-1]
    base_id = backend.image_id(BASE)
    assert base_id and built.dockerfile.splitlines()[1] == f"FROM {base_id}"
    assert built.labels == {
        "io.solo-harness.managed": "1",
        "io.solo-harness.context-digest": derive.expected_digest(BASE, base_id, "claude-code"),
        "io.solo-harness.base-id": base_id,
        "io.solo-harness.agent-digest": images.context_digest("claude-code"),
        "io.solo-harness.derived-from": BASE,
        "io.solo-harness.derived-agent": "claude-code",
    }


def test_aider_is_installed_with_the_bases_python_so_its_harness_image_is_not_built(backend: FakeBackend) -> None:
    tag = derive.derive(backend, BASE, "aider")
    assert [b.tag for b in backend.builds] == ["harness-base:latest", tag]


def test_an_up_to_date_derived_image_is_reused_and_a_changed_base_rebuilds_it(backend: FakeBackend) -> None:
    tag = derive.derive(backend, BASE, "codex")
    assert derive_state(backend, BASE, "codex") == "present"
    count = len(backend.builds)
    assert derive.derive(backend, BASE, "codex") == tag and len(backend.builds) == count
    backend.image_ids[BASE] = "sha256:" + "cd" * 32  # the user rebuilt their image under the same name
    assert derive_state(backend, BASE, "codex") == "stale"
    assert derive.derive(backend, BASE, "codex") == tag and len(backend.builds) == count + 1
    assert derive_state(backend, BASE, "codex") == "present"


def test_a_changed_agent_image_context_makes_it_stale(backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    derive.derive(backend, BASE, "claude-code")
    monkeypatch.setattr(derive, "agent_digest", lambda agent: "0123456789abcdef")
    assert derive_state(backend, BASE, "claude-code") == "stale"


def test_a_missing_base_is_one_line_and_nothing_is_pulled(backend: FakeBackend) -> None:
    assert derive_state(backend, "absent:1", "codex") == "missing"
    with pytest.raises(ImageMissingError) as info:
        derive.derive(backend, "absent:1", "codex")
    assert info.value.message == (
        "image 'absent:1' is not present locally and the harness pulls nothing: pull or build it first "
        "(docker pull absent:1)"
    )
    assert backend.builds == []


def test_a_backend_whose_cluster_pulls_images_derives_nothing() -> None:
    assert derive_state(FakeCluster(), BASE, "codex") == "remote"
    with pytest.raises(ImageMissingError, match=r"builds no images: .*harness images build codex --from"):
        derive.derive(FakeCluster(), BASE, "codex")


@pytest.mark.parametrize(
    ("engine_says", "expected"),
    [
        (
            "building image t failed: The command '/bin/sh /tmp/harness-derive/setup.sh' returned a non-zero code: 3 "
            "(last output: harness-refused: Claude Code's native binary needs glibc (Alpine))",
            "cannot derive an image for claude-code from python:3.12-slim: Claude Code's native binary needs glibc "
            "(Alpine)",
        ),
        (
            'building image t failed: OCI runtime create failed: exec: "/bin/sh": stat /bin/sh: no such file or '
            "directory: unknown",
            "cannot derive an image for claude-code from python:3.12-slim: it has no /bin/sh (the harness and the "
            "agents run their commands with sh)",
        ),
        (
            "building image t failed: disk full",
            "cannot derive an image for claude-code from python:3.12-slim: building image t failed: disk full",
        ),
    ],
)
def test_a_failed_build_says_why_in_one_line(backend: FakeBackend, engine_says: str, expected: str) -> None:
    def failing(**kwargs: object) -> None:
        if str(kwargs["tag"]).startswith("harness-derived/"):
            raise ImageMissingError(engine_says)

    backend.build_image = failing  # type: ignore[method-assign]
    with pytest.raises(ImageMissingError) as info:
        derive.derive(backend, BASE, "claude-code")
    assert info.value.message == expected


def test_the_host_extra_cas_go_into_the_context_and_the_digest(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_id = backend.image_id(BASE) or ""
    before = derive.expected_digest(BASE, base_id, "codex")
    cert = tmp_path / "corp.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(trust, "extra_ca_files", lambda: [cert])
    assert derive.expected_digest(BASE, base_id, "codex") != before
