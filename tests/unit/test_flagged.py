import pytest

from runner.flagged import flagged, is_flagged


@pytest.mark.parametrize(
    "path",
    [".vscode/tasks.json", ".claude/settings.json", ".envrc", ".githooks/pre-commit", ".gitattributes",
     "sub/.vscode/launch.json", ".vscode", ".githooks", ".VSCode/tasks.json", ".EnvRC", ".github/workflows/ci.yml",
     "pkg/.gitattributes", ".env.local", ".gitmodules"],
)  # fmt: skip
def test_paths_that_run_code_later_are_flagged(path: str) -> None:
    assert is_flagged(path)


@pytest.mark.parametrize("path", ["src/ok.py", "README.md", "docs/vscode.md", "envrc.txt", "my.vscode/x"])
def test_ordinary_paths_are_not(path: str) -> None:
    assert not is_flagged(path)


def test_symlinks_and_submodules_are_always_flagged() -> None:
    assert flagged(["src/a.py", "docs/link"], ["docs/link"]) == ["docs/link"]
