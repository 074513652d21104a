"""The layers of docs/architecture.md are the code's: every import of `runner` obeys the table there."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "runner"
DOC = ROOT / "docs" / "architecture.md"


def layer_rules() -> dict[str, set[str]]:
    """package -> the packages it may import, read from the table in docs/architecture.md."""
    rules: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`runner."):
            continue
        package = cells[1].strip("`")
        allowed = set(re.findall(r"`(runner\.[a-z_]+)`", cells[3]))
        if cells[3].startswith("every layer below"):
            allowed = {"*below*"}
        rules[package] = allowed
    return rules


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every `runner...` module a file imports, lazily or not, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "runner"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "runner":
            found.append((node.lineno, str(node.module)))
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def violations(rules: dict[str, set[str]]) -> list[str]:
    order = list(rules)  # the table runs from the top layer down
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        own = package_of(".".join(rel.parts))
        if own not in rules:
            continue  # runner/__init__.py and runner/__main__.py sit above every layer
        allowed = rules[own]
        if allowed == {"*below*"}:
            allowed = set(order[order.index(own) + 1 :])
        for line, module in imports_of(path):
            target = package_of(module)
            if target != own and target not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({own} may not import {target})")
    return found


def test_the_table_names_every_package_of_runner() -> None:
    rules = layer_rules()
    packages = {f"runner.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(rules), "docs/architecture.md's table and runner/'s packages differ"
    assert not [p for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}], (
        "a module outside the layers"
    )


def test_every_import_obeys_the_layers() -> None:
    assert violations(layer_rules()) == []


def test_the_check_sees_an_import_that_runs_back_up(tmp_path: Path) -> None:
    """Control: the rules, with the engines allowed less, find the engines' imports of the record."""
    rules = layer_rules()
    rules["runner.backends"] = {"runner.base"}
    assert any(" imports runner.record." in v for v in violations(rules))


def test_each_package_says_what_it_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc, f"{init.relative_to(ROOT)}: the docstring does not say what the layer may import"


MAX_LINES = 450
REASON = "Why one module of this size"


def oversized_without_reason(sources: dict[str, str]) -> list[str]:
    """Modules over MAX_LINES lines whose docstring does not say why they stay one module."""
    return [
        f"{name}: {len(text.splitlines())} lines"
        for name, text in sorted(sources.items())
        if len(text.splitlines()) > MAX_LINES and REASON not in (ast.get_docstring(ast.parse(text)) or "")
    ]


def test_no_module_above_450_lines_without_a_reason_at_its_top() -> None:
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in PACKAGE.rglob("*.py")}
    assert oversized_without_reason(sources) == []


def test_the_size_check_sees_a_long_module_without_its_reason() -> None:
    long = '"""A module."""\n' + "x = 1\n" * MAX_LINES
    reasoned = f'"""A module.\n\n{REASON}: one state machine.\n"""\n' + "x = 1\n" * MAX_LINES
    assert oversized_without_reason({"long.py": long, "reasoned.py": reasoned, "short.py": "x = 1\n"}) == [
        f"long.py: {MAX_LINES + 1} lines"
    ]


READ_ONLY = ("status", "race_status", "logs", "report", "morning")  # `status`, `list`, `logs`, `report` (--all)


def test_the_read_only_commands_import_neither_the_loop_nor_an_engines_sdk() -> None:
    """What docs/architecture.md promises for the commands a user runs in the morning, in a fresh interpreter."""
    probe = (
        "import importlib, json, sys\n"
        f"for name in {READ_ONLY!r}: importlib.import_module('runner.usecases.' + name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('runner.loop') or m.split('.')[0] in "
        "('docker', 'kubernetes'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
