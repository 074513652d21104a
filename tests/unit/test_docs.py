"""The references are generated and complete: nothing stale, no field, enum value, exit code, command or option
without a description, and the documentation site builds offline with strict link checking."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import typer
import typer.main
from pydantic import BaseModel, Field

from runner.base.errors import ExitCode
from runner.cli.app import app
from runner.record.models import JOURNAL_MODELS, DescribedEnum, RunOwner, StatusReport

ROOT = Path(__file__).resolve().parents[2]


def _gen_docs() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_references_and_schemas_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_docs.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------ descriptions of the models


def _types_in(annotation: Any) -> list[type]:
    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel | Enum) else []
    for arg in get_args(annotation):
        found += _types_in(arg)
    return found


def _literals_in(annotation: Any) -> list[str]:
    """The values of a Literal with a choice (a single value, such as `kind`, shows in the type column)."""
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)] if len(get_args(annotation)) > 1 else []
    return [v for arg in get_args(annotation) for v in _literals_in(arg)]


def undocumented(roots: list[type[BaseModel]]) -> list[str]:
    """Every model, field, enum and enum value reachable from `roots` (nested models too) that lacks its words."""
    problems: list[str] = []
    models, seen_enums = list(roots), set()
    for model in models:  # grows while it is walked
        if not (model.__dict__.get("__doc__") or "").strip():
            problems.append(f"model {model.__name__}: no docstring")
        for name, field in model.model_fields.items():
            where = f"{model.__name__}.{name}"
            if not (field.description or "").strip():
                problems.append(f"field {where}: no description")
            problems += [
                f"field {where}: description does not name the value {value!r}"
                for value in _literals_in(field.annotation)
                if value not in (field.description or "")
            ]
            for found in _types_in(field.annotation):
                if issubclass(found, BaseModel) and found not in models:
                    models.append(found)
                elif issubclass(found, Enum) and found not in seen_enums:
                    seen_enums.add(found)
                    if not issubclass(found, DescribedEnum):
                        problems.append(f"enum {found.__name__}: not a DescribedEnum")
                        continue
                    if not (found.__dict__.get("__doc__") or "").strip():
                        problems.append(f"enum {found.__name__}: no docstring")
                    meanings = found.describe()
                    problems += [
                        f"enum {found.__name__}.{member.name}: no description"
                        for member in found
                        if not meanings.get(member, "").strip()
                    ]
    return problems


# The journal and every other persisted file docs/journal.md documents.
DOCUMENTED: list[type[BaseModel]] = [
    *JOURNAL_MODELS.values(),
    StatusReport,
    RunOwner,
    *[model for _, _, model in _gen_docs().OTHER_FILES],
]


def test_every_field_and_enum_value_of_the_journal_has_a_description() -> None:
    assert undocumented(DOCUMENTED) == []


class _Mood(DescribedEnum):
    """A test enum with one value left undescribed."""

    CALM = "calm"
    CROSS = "cross"

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {cls.CALM: "At ease."}


class _Plain(Enum):
    A = "a"


class _Inner(BaseModel):
    """Nested two levels down."""

    depth: int = 0


class _Middle(BaseModel):
    """Nested one level down."""

    inner: list[_Inner] = Field(default_factory=list, description="Inner ones.")
    plain: _Plain | None = Field(default=None, description="A plain enum.")


class _Outer(BaseModel):
    middle: _Middle | None = Field(default=None, description="The middle.")
    mood: _Mood = Field(default=_Mood.CALM, description="How it feels.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="`fast` only.")


def test_the_description_check_finds_what_is_missing_at_any_depth() -> None:
    """Positive control: the same check reports each gap planted in a nested model."""
    assert sorted(undocumented([_Outer])) == sorted(
        [
            "model _Outer: no docstring",
            "field _Outer.mode: description does not name the value 'slow'",
            "enum _Mood.CROSS: no description",
            "field _Inner.depth: no description",
            "enum _Plain: not a DescribedEnum",
        ]
    )


def test_enum_meanings_reach_the_json_schema() -> None:
    schema = JOURNAL_MODELS["iteration"].model_json_schema(by_alias=True)
    outcome = schema["$defs"]["Outcome"]
    assert len(outcome["enumDescriptions"]) == len(outcome["enum"]) > 0
    assert all(outcome["enumDescriptions"])
    assert schema["properties"]["outcome"]["description"]


def test_every_exit_code_has_a_description() -> None:
    meanings = ExitCode.describe()
    assert [code.name for code in ExitCode if not meanings.get(code, "").strip()] == []


# ------------------------------------------------------------------------------------ the CLI reference


def _visible(command: Any, ctx: typer.Context) -> list[tuple[Any, typer.Context]]:
    found = [(command, ctx)]
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if not sub.hidden:
            found += _visible(sub, typer.Context(sub, info_name=name, parent=ctx))
    return found


def test_the_cli_reference_has_every_visible_command_and_option_and_no_hidden_one() -> None:
    gen_docs = _gen_docs()
    text = gen_docs.cli_reference()
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="harness", **root.context_settings)
    commands = _visible(root, ctx)
    assert len(commands) > 10
    for command, c in commands:
        assert (command.help or "").strip(), f"{c.command_path} has no help text"
        section = text.split(f"## `{c.command_path}`\n", 1)
        assert len(section) == 2, f"no section for {c.command_path}"
        body = section[1].split("\n## ", 1)[0]
        for param in command.get_params(c):
            if param.hidden or param.name == "help":
                continue
            assert (param.help or "").strip(), f"{c.command_path}: {param.name} has no help text"
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in body, f"{c.command_path}: {opt} is not documented"
            said = gen_docs.cell((param.help or "").split(".")[0])
            assert said in body, f"{c.command_path}: help of {param.name} missing"
    assert "_supervise" not in text  # hidden commands stay out
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}` |" in text


# ------------------------------------------------------------------------------------ the site


def _mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """mkdocs is in the `docs` extra, which `make install` (and so `make test`) installs."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_documentation_site_builds_offline_with_strict_link_checking(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, a missing anchor or a page left out of the nav fails it."""
    proc = _mkdocs_build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (tmp_path / "site" / "journal" / "index.html").is_file()
    assert (tmp_path / "site" / "cli" / "index.html").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """Positive control for the site test: the same build with one dead link in a copy of the docs fails."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "concepts.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    proc = _mkdocs_build(tmp_path, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr + proc.stdout
