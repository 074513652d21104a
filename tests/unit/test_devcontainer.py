"""devcontainer.json: JSONC, every form of the lifecycle commands, the notes, bad input, and reading it from a
commit through git (never the working tree)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.base.errors import UsageError
from runner.record.gitops import HostGit
from runner.sandbox.devcontainer import (
    Devcontainer,
    DevcontainerBuild,
    build_devcontainer_image,
    build_tag,
    find_devcontainer,
    parse_devcontainer,
    strip_jsonc,
)
from tests.helpers import GitRepo

PATH = ".devcontainer/devcontainer.json"


def parse(text: str, path: str = PATH) -> Devcontainer:
    return parse_devcontainer(text, path=path, workspace_name="proj")


# ------------------------------------------------------------------------------------------------ JSONC


def test_comments_and_trailing_commas_are_blanked_keeping_every_position() -> None:
    text = '{\n  // a comment\n  "a": 1, /* inline */ "b": [1, 2,],\n  /* two\n lines */ "c": {"d": 3,},\n}\n'
    stripped = strip_jsonc(text)
    assert json.loads(stripped) == {"a": 1, "b": [1, 2], "c": {"d": 3}}
    assert len(stripped) == len(text) and stripped.count("\n") == text.count("\n")


def test_comment_markers_and_commas_inside_strings_are_kept() -> None:
    text = r'{"url": "http://x//y", "glob": "/* not */", "q": "a \"//\" b", "c": ",]", "e": "\\",}'
    assert json.loads(strip_jsonc(text)) == {"url": "http://x//y", "glob": "/* not */", "q": 'a "//" b', "c": ",]",
                                             "e": "\\"}  # fmt: skip


def test_a_trailing_comma_before_a_comment_and_the_closing_bracket_goes() -> None:
    assert json.loads(strip_jsonc('{"a": [1, // one\n], }')) == {"a": [1]}


def test_a_byte_order_mark_is_accepted() -> None:
    assert parse('\ufeff{"image": "python:3.12"}').image == "python:3.12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"image": "x",, }', "line 1 column 17"),
        ('{\n  "image": "x"\n  "b": 1\n}', "line 3 column 3"),
        ('{"image": "x" /* never closed', "never ends"),
        ("[1, 2]", "the top level must be an object, not list"),
        ("", "not valid JSON"),
        ('{"a": "unterminated\n}', "not valid JSON"),
    ],
)
def test_bad_json_is_one_usage_line_naming_the_file(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert info.value.message.startswith(f"{PATH}: ") and expected in info.value.message
    assert "\n" not in info.value.message


# ------------------------------------------------------------------------------------------------ commands


def test_a_string_command_is_one_shell_command() -> None:
    dc = parse('{"image": "x", "postCreateCommand": "pip install -e .[test] && npm ci"}')
    assert dc.post_create == ["pip install -e .[test] && npm ci"]


def test_an_array_command_is_the_exec_form_quoted_for_the_shell() -> None:
    dc = parse('{"image": "x", "onCreateCommand": ["python3", "-m", "pip", "install", "a b", "$HOME", "it\'s"]}')
    assert dc.on_create == ["python3 -m pip install 'a b' '$HOME' 'it'\"'\"'s'"]


def test_an_object_command_is_one_command_per_entry_in_order() -> None:
    dc = parse('{"image": "x", "updateContentCommand": {"deps": "npm ci", "py": ["pip", "install", "-e", "."]}}')
    assert dc.update_content == ["npm ci", "pip install -e ."]


def test_setup_commands_run_in_the_lifecycle_order() -> None:
    dc = parse('{"postCreateCommand": "c", "image": "x", "updateContentCommand": "b", "onCreateCommand": "a"}')
    assert dc.setup_commands == ["a", "b", "c"]


def test_empty_commands_are_nothing() -> None:
    dc = parse('{"image": "x", "onCreateCommand": "", "updateContentCommand": [], "postCreateCommand": {}}')
    assert dc.setup_commands == []


@pytest.mark.parametrize("value", ["1", "[1, 2]", '{"a": 1}', '{"a": {"b": "c"}}', "true"])
def test_a_malformed_command_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match=r"postCreateCommand.* must be a string, an array of strings"):
        parse(f'{{"image": "x", "postCreateCommand": {value}}}')


# ------------------------------------------------------------------------------------------------ image, build


def test_build_paths_are_relative_to_the_files_folder_and_become_repository_paths() -> None:
    dc = parse('{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"V": "1"}, "target": "dev"}}')
    assert dc.build == DevcontainerBuild(dockerfile=".devcontainer/Dockerfile", context="", args={"V": "1"},
                                         target="dev")  # fmt: skip
    assert dc.image is None


def test_the_context_defaults_to_the_files_folder() -> None:
    dc = parse('{"build": {"dockerfile": "Dockerfile"}}')
    assert dc.build is not None and (dc.build.context, dc.build.dockerfile) == (
        ".devcontainer",
        ".devcontainer/Dockerfile",
    )


def test_a_root_devcontainer_json_resolves_against_the_root() -> None:
    dc = parse('{"build": {"dockerfile": "docker/dev.Dockerfile"}}', path=".devcontainer.json")
    assert dc.build is not None and (dc.build.context, dc.build.dockerfile) == ("", "docker/dev.Dockerfile")


def test_the_older_top_level_dockerfile_form_is_read() -> None:
    dc = parse('{"dockerFile": "Dockerfile", "context": ".."}')
    assert dc.build is not None and (dc.build.context, dc.build.dockerfile) == ("", ".devcontainer/Dockerfile")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        ('{"dockerfile": "../../Dockerfile"}', "build.dockerfile '../../Dockerfile' is outside the repository"),
        ('{"dockerfile": "Dockerfile", "context": "../.."}', "build.context '../..' is outside the repository"),
        ('{"dockerfile": "/etc/Dockerfile"}', "must be a relative path"),
        ('{"context": "."}', "build.dockerfile must name the Dockerfile"),
        ('{"dockerfile": "D", "args": {"A": 1}}', "build.args must be an object of strings"),
        ('{"dockerfile": "D", "target": 3}', "build.target must be a string"),
        ('"Dockerfile"', "build must be an object"),
    ],
)
def test_a_malformed_build_is_a_usage_error(build: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(f'{{"build": {build}}}')
    assert expected in info.value.message


def test_image_must_be_a_string() -> None:
    with pytest.raises(UsageError, match="image must be a non-empty string"):
        parse('{"image": ["x"]}')


def test_build_wins_over_image_with_a_note() -> None:
    dc = parse('{"image": "x", "build": {"dockerfile": "Dockerfile"}}')
    assert dc.image is None and dc.build is not None
    assert any("both image and build" in n for n in dc.notes)


# ------------------------------------------------------------------------------------------------ env, notes


def test_container_env_expands_the_workspace_variables_and_drops_the_hosts() -> None:
    dc = parse(
        '{"image": "x", "containerEnv": {"A": "1", "W": "${containerWorkspaceFolder}/bin", '
        '"N": "${localWorkspaceFolderBasename}-${containerWorkspaceFolderBasename}", "K": "${localEnv:API_KEY}", '
        '"HARNESS_SESSION": "x", "bad-name": "y"}}'
    )
    assert dc.container_env == {"A": "1", "W": "/workspace/bin", "N": "proj-workspace"}
    assert any("containerEnv K ignored: ${localEnv:API_KEY} is not expanded here" in n for n in dc.notes)
    assert any("HARNESS_SESSION ignored" in n for n in dc.notes)
    assert any("'bad-name' ignored" in n for n in dc.notes)


def test_container_env_must_be_strings() -> None:
    with pytest.raises(UsageError, match="containerEnv must be an object of strings"):
        parse('{"image": "x", "containerEnv": {"A": 1}}')


def test_build_args_with_host_variables_are_dropped_with_a_note() -> None:
    dc = parse('{"build": {"dockerfile": "D", "args": {"A": "1", "U": "${localEnv:USER}"}}}')
    assert dc.build is not None and dc.build.args == {"A": "1"}
    assert any("build.args.U ignored" in n for n in dc.notes)


def test_what_cannot_work_here_is_named_one_line_each() -> None:
    dc = parse(
        """{
          "name": "x", "image": "python:3.12", "customizations": {"vscode": {}},
          "features": {"ghcr.io/devcontainers/features/node:1": {}},
          "remoteUser": "vscode", "forwardPorts": [8000], "appPort": 3000, "mounts": ["source=/,target=/host"],
          "runArgs": ["--privileged"], "initializeCommand": "rm -rf ~", "postStartCommand": "x",
          "postAttachCommand": "y", "dockerComposeFile": "c.yml", "someNewThing": 1,
          "build": null
        }"""
    )
    joined = "\n".join(dc.notes)
    assert f"{PATH}: features ignored: features are fetched from a registry and cannot be installed here" in joined
    for key in ("remoteUser", "forwardPorts", "appPort", "mounts", "runArgs", "initializeCommand", "postStartCommand",
                "postAttachCommand", "dockerComposeFile"):  # fmt: skip
        assert f"{PATH}: {key} ignored: " in joined, key
    assert "runs on the host" in joined
    assert f"{PATH}: someNewThing is not a property the harness knows; ignored" in joined
    assert "name" not in {n.split(":")[1].split()[0] for n in dc.notes}  # harmless keys stay quiet
    assert all("\n" not in n for n in dc.notes) and len(dc.notes) == 11


def test_build_options_it_does_not_use_are_named() -> None:
    dc = parse('{"build": {"dockerfile": "D", "cacheFrom": "x", "options": ["--pull"]}}')
    assert sum("build.cacheFrom ignored" in n or "build.options ignored" in n for n in dc.notes) == 2


# --------------------------------------------------------------------------------------- read at a commit


def _commit(repo: GitRepo, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = repo.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "files")
    return repo.git("rev-parse", "HEAD")


def test_it_is_read_from_the_commit_not_the_working_tree(repo: GitRepo) -> None:
    commit = _commit(repo, {PATH: '{"image": "at-commit"}'})
    (repo.path / PATH).write_text('{"image": "in-the-working-tree"}')
    with HostGit(repo.path) as git:
        dc = find_devcontainer(git, commit)
    assert dc is not None and dc.image == "at-commit" and dc.path == PATH


def test_the_folder_form_wins_over_the_root_file(repo: GitRepo) -> None:
    commit = _commit(repo, {PATH: '{"image": "folder"}', ".devcontainer.json": '{"image": "root"}'})
    with HostGit(repo.path) as git:
        dc = find_devcontainer(git, commit)
    assert dc is not None and dc.image == "folder"


def test_the_root_file_is_found_and_none_without_either(repo: GitRepo) -> None:
    with HostGit(repo.path) as git:
        assert find_devcontainer(git, repo.git("rev-parse", "HEAD")) is None
        commit = _commit(repo, {".devcontainer.json": '{"image": "root"}'})
        dc = find_devcontainer(git, commit)
    assert dc is not None and dc.path == ".devcontainer.json"


def test_a_linked_devcontainer_json_is_refused(repo: GitRepo, tmp_path: Path) -> None:
    secret = tmp_path / "outside.json"
    secret.write_text('{"image": "from-outside"}')
    os.symlink(secret, repo.path / ".devcontainer.json")
    (repo.path / "elsewhere").mkdir()
    (repo.path / "elsewhere" / "devcontainer.json").write_text('{"image": "via-link"}')
    os.symlink("elsewhere", repo.path / ".devcontainer")
    commit = _commit(repo, {})
    with HostGit(repo.path) as git, pytest.raises(UsageError, match=r"\.devcontainer\.json is a symbolic link"):
        find_devcontainer(git, commit)


def test_a_folder_link_alone_is_no_devcontainer(repo: GitRepo) -> None:
    (repo.path / "elsewhere").mkdir()
    (repo.path / "elsewhere" / "devcontainer.json").write_text('{"image": "via-link"}')
    os.symlink("elsewhere", repo.path / ".devcontainer")
    commit = _commit(repo, {})
    with HostGit(repo.path) as git:
        assert find_devcontainer(git, commit) is None


def test_a_huge_file_is_refused(repo: GitRepo) -> None:
    commit = _commit(repo, {PATH: '{"image": "x", "pad": "' + "a" * 300_000 + '"}'})
    with HostGit(repo.path) as git, pytest.raises(UsageError, match="over 256 KiB"):
        find_devcontainer(git, commit)


def test_the_build_tag_follows_the_content_that_is_built(repo: GitRepo) -> None:
    files = {".devcontainer/Dockerfile": "FROM debian:bookworm-slim\n", PATH: '{"build": {"dockerfile": "Dockerfile"}}'}
    first = _commit(repo, files)
    build = DevcontainerBuild(dockerfile=".devcontainer/Dockerfile", context=".devcontainer")
    with HostGit(repo.path) as git:
        tag = build_tag(git, first, build)
        assert tag.startswith("harness-devcontainer:") and len(tag.partition(":")[2]) == 16
        unrelated = _commit(repo, {"app.py": "print('changed')\n"})
        assert build_tag(git, unrelated, build) == tag  # outside the context: the same image
        changed = _commit(repo, {".devcontainer/Dockerfile": "FROM debian:bookworm-slim\nRUN true\n"})
        assert build_tag(git, changed, build) != tag
        assert build_tag(git, changed, build.model_copy(update={"args": {"A": "1"}})) != build_tag(git, changed, build)
        with pytest.raises(UsageError, match="is not a file in commit"):
            build_tag(git, changed, build.model_copy(update={"dockerfile": ".devcontainer/Nope"}))
        with pytest.raises(UsageError, match="is not a directory in commit"):
            build_tag(git, changed, build.model_copy(update={"context": "nope"}))


def test_the_build_context_comes_from_the_commit_and_stays_inside_it(repo: GitRepo, tmp_path: Path) -> None:
    """With the fake backend: what reaches the engine is the commit's files (a link out of the tree is left
    out), the Dockerfile named inside the context, the args, the target and the managed label."""
    from runner.backends.fake import FakeBackend

    files = {".devcontainer/Dockerfile": "FROM debian:bookworm-slim\nCOPY . /src\n", "src/main.py": "x = 1\n"}
    _commit(repo, files)
    os.symlink("/etc/passwd", repo.path / "src" / "passwd-link")
    os.symlink("main.py", repo.path / "src" / "inner-link")
    commit = _commit(repo, {})
    (repo.path / "src" / "uncommitted.py").write_text("y = 2\n")
    build = DevcontainerBuild(dockerfile=".devcontainer/Dockerfile", context="", args={"A": "1"}, target="dev")
    backend = FakeBackend()
    seen: dict[str, object] = {}
    original = backend.build_image

    def spy(**kwargs: object) -> None:
        context = kwargs["context"]
        assert isinstance(context, Path)
        seen["files"] = sorted(str(p.relative_to(context)) for p in context.rglob("*"))
        seen["inner"] = os.readlink(context / "src" / "inner-link")
        original(**kwargs)  # type: ignore[arg-type]

    backend.build_image = spy  # type: ignore[method-assign]
    with HostGit(repo.path) as git:
        tag = build_devcontainer_image(backend, git, commit, build)
        assert build_devcontainer_image(backend, git, commit, build) == tag  # reused: built once
    assert len(backend.builds) == 1
    made = backend.builds[0]
    assert (made.tag, made.buildargs, made.target) == (tag, {"A": "1"}, "dev")
    assert made.labels["io.solo-harness.managed"] == "1"
    assert "src/uncommitted.py" not in seen["files"] and "src/passwd-link" not in seen["files"]
    assert {"src/main.py", ".devcontainer/Dockerfile", "src/inner-link"} <= set(seen["files"])  # type: ignore[call-overload]
    assert seen["inner"] == "main.py"
