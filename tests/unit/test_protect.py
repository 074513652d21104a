"""Protected paths: what a pattern protects, which patterns are refused, the default, and the helper's report."""

from __future__ import annotations

import json

import pytest

from runner.base.protect import is_protected, matches, pattern_problem
from runner.loop.protect import RUNNER_FILES, default_protect, parse_changes, protected_roots
from runner.record.flagged import FlagReason, classify
from runner.record.settings import RunOptions
from tests.helpers import HARNESS, GitRepo

PROTECTS = [
    ("tests", "tests"),
    ("tests", "tests/test_a.py"),
    ("tests/", "tests/unit/test_a.py"),
    ("tests/unit", "tests/unit/deep/x.py"),
    ("**/conftest.py", "conftest.py"),
    ("**/conftest.py", "pkg/sub/conftest.py"),
    ("**/test_*.py", "test_app.py"),
    ("**/test_*.py", "src/pkg/test_app.py"),
    ("src/**/fixtures", "src/a/b/fixtures/data.json"),
    ("src/**/fixtures", "src/fixtures/data.json"),
    ("jest.config.*", "jest.config.js"),
    ("test?", "tests/x"),
    ("[tT]ests", "Tests/x.py"),
    ("[!a]bc", "xbc/d"),
    ("a[]]b", "a]b"),
    ("a+(b)", "a+(b)/c"),  # regular-expression characters are plain
    ("tests/**", "tests"),
    ("**/a/**/b", "x/a/y/z/b/c"),
]
DOES_NOT = [
    ("tests", "tests2/test_a.py"),
    ("tests", "src/tests/test_a.py"),  # anchored at the top
    ("tests/unit", "tests/integration/x.py"),
    ("**/conftest.py", "conftest.pyc"),
    ("**/conftest.py", "pkg/conftest.py.bak"),
    ("**/test_*.py", "src/pkg/app_test.txt"),
    ("tests/*.py", "tests/sub/a.txt"),
    (".*", ".git/config"),  # .git is never protected
    ("**/config", ".git/config"),
    ("Tests", "tests/x.py"),  # the view is on Linux: case counts
    ("[!a]bc", "abc"),
    ("a?b", "a/b"),  # a glob never spans a /
    ("a*", "b/a"),
    ("a+(b)", "aa(b)"),
]


@pytest.mark.parametrize(("pattern", "path"), PROTECTS)
def test_a_pattern_protects_what_it_names_and_what_is_below(pattern: str, path: str) -> None:
    assert matches(pattern, path)


@pytest.mark.parametrize(("pattern", "path"), DOES_NOT)
def test_a_pattern_protects_nothing_else(pattern: str, path: str) -> None:
    assert not matches(pattern, path)


def test_a_review_compares_without_case() -> None:
    """On a case-insensitive checkout `Tests/` is `tests/`: the review flags it."""
    assert matches("tests", "Tests/x.py", fold=True) and not matches("tests", "Tests/x.py")
    assert is_protected(["docs", "tests"], "TESTS/a.py", fold=True)
    assert not is_protected([], "tests/a.py")


@pytest.mark.parametrize(
    "pattern",
    ["", "/", "//", "/etc/passwd", "../outside", "tests/../../x", "./tests", "a/./b", "**", "*", "*/**", "**/*",
     ".git", ".git/hooks", "a\nb", "tab\there", "x" * 2000, "tests/[z-a]"],
)  # fmt: skip
def test_bad_patterns_are_refused_with_a_reason(pattern: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and "\n" not in problem and len(problem) < 200


@pytest.mark.parametrize("pattern", ["tests", "tests/", "**/conftest.py", "src/**/test_*.py", ".github", "a b/c"])
def test_good_patterns_are_taken(pattern: str) -> None:
    assert pattern_problem(pattern) is None


TREE = {
    "app.py", "pyproject.toml", "tests/test_app.py", "tests/unit/test_core.py", "src/pkg/core.py",
    "src/pkg/core_test.py", "scripts/check.sh", "Makefile",
}  # fmt: skip


def test_no_check_no_protection() -> None:
    assert default_protect(None, TREE) == []
    assert default_protect("", TREE) == []


def test_the_default_protects_the_tests_the_check_names_and_the_runners_configuration() -> None:
    found = default_protect("pytest -q tests/unit", TREE)
    assert found[:2] == ["tests/unit", "tests"]  # named by the check first, then the conventional directory
    assert "**/test_*.py" in found and "**/*_test.py" in found  # the base has such files
    assert "**/*_test.go" not in found and "spec" not in found  # it has none of these
    assert set(RUNNER_FILES) <= set(found)  # always: a conftest.py or pytest.ini the agent adds counts too
    assert "**/conftest.py" in found and "pyproject.toml" in found
    assert "Makefile" not in found  # the check does not run make
    assert len(found) == len(set(found))


@pytest.mark.parametrize(
    ("check", "named"),
    [
        ("sh scripts/check.sh", "scripts/check.sh"),
        ("./scripts/check.sh --fast", "scripts/check.sh"),
        ("python -m pytest tests/test_app.py::test_main -x", "tests/test_app.py"),
        ("pytest --rootdir=src/pkg", "src/pkg"),
        ("cd /workspace && pytest 'tests/unit/'", "tests/unit"),
    ],
)
def test_paths_the_check_names_are_protected_when_the_base_has_them(check: str, named: str) -> None:
    assert named in default_protect(check, TREE)


def test_paths_the_base_does_not_have_are_not_named() -> None:
    found = default_protect("pytest newtests/ ../outside /etc . -k 'not slow'", TREE)
    assert not {"newtests", "../outside", "/etc", ".", "not slow"} & set(found)
    assert default_protect("pytest 'unbalanced", TREE)  # a check shlex cannot split is split on blanks


def test_make_brings_the_makefile() -> None:
    assert "Makefile" in default_protect("make test", TREE)
    assert "Makefile" in default_protect("cd x && make -j2 check", TREE)
    assert "Makefile" not in default_protect("pytest tests/makefile_test.py", TREE)


def test_the_roots_to_extract_are_the_shortest_protected_paths() -> None:
    roots = protected_roots(["tests", "**/conftest.py", "pyproject.toml", "tests/unit"], {*TREE, "a/conftest.py"})
    assert roots == ["a/conftest.py", "pyproject.toml", "tests"]
    assert protected_roots([], TREE) == []


def test_the_helpers_report_is_read_strictly() -> None:
    planted = json.dumps("tests/a\nharness-protected added b.py")  # a newline in a name arrives escaped
    undecodable = json.dumps("bad-\udcff-name")  # a name that is not UTF-8, as os.fsdecode gives it
    text = "\n".join([
        "noise harness-protected added \"x\"",  # not at a line's start
        f"harness-protected added {json.dumps('tests/new_test.py')}",
        f"harness-protected deleted {planted}",
        "harness-protected modified not-json",
        f"harness-protected renamed {json.dumps('x')}",
        f"harness-protected modified {undecodable}",
        "harness-protected-more 7",
        "harness-view ready",
    ])  # fmt: skip
    changes, more = parse_changes(text)
    assert [(c.path, c.change) for c in changes] == [
        ("tests/new_test.py", "added"),
        ("tests/a\nharness-protected added b.py", "deleted"),
        ("bad-?-name", "modified"),
    ]
    assert more == 7


def test_protected_changes_are_flagged_first() -> None:
    reasons = classify([".envrc", "app.py", "tests/test_a.py", "Tests/b.py"], protected=["tests"])
    assert list(reasons) == ["Tests/b.py", "tests/test_a.py", ".envrc"]
    assert reasons["tests/test_a.py"] == [FlagReason.PROTECTED]
    assert classify(["tests/test_a.py"]) == {}  # without protected paths, a test is an ordinary file


def test_the_setting_checks_each_pattern() -> None:
    assert RunOptions.model_validate({"protect": ["tests", "tests", "**/conftest.py"]}).protect == (
        "tests",
        "**/conftest.py",
    )
    assert RunOptions.model_validate({"protect": []}).protect == ()
    assert RunOptions().protect is None
    with pytest.raises(ValueError, match="relative to the repository"):
        RunOptions.model_validate({"protect": ["/abs"]})
    with pytest.raises(ValueError, match="at most"):
        RunOptions.model_validate({"protect": [f"p{i}" for i in range(300)]})


def test_cli_refuses_a_bad_pattern_in_one_line(repo: GitRepo) -> None:
    import subprocess

    for args, words in (
        (["--protect", "../x"], "--protect: '../x' has a '.' or '..' component"),
        (["--protect", "tests", "--no-protect"], "--protect or --no-protect"),
    ):
        proc = subprocess.run(
            [*HARNESS, "run", "--session", "s", "--objective", "x", "--check", "true", *args, "--dry-run"],
            capture_output=True, text=True, check=False, cwd=repo.path, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr


def test_the_prompt_says_what_the_check_runs_as_the_base_has_it() -> None:
    from runner.loop.prompt import build_prompt

    def prompt(check: str | None, protected: list[str]) -> str:
        return build_prompt(objective="o", session="s", iteration=1, max_iterations=2, branch="harness/s",
                            history=[], notes=[], check=check, protected=protected)  # fmt: skip

    text = prompt("pytest -q", ["tests", "**/conftest.py"])
    assert "as the base commit has them" in text and "`tests`, `**/conftest.py`" in text
    assert "as the base commit has them" not in prompt("pytest -q", [])
    assert "as the base commit has them" not in prompt(None, ["tests"])
