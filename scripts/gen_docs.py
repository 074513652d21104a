"""Generate the references from the code: docs/cli.md (the typer app), docs/journal.md and docs/schema/ (the
pydantic models of runner/record/models.py, with their field descriptions and enum meanings).

`python scripts/gen_docs.py` writes them; `--check` exits 1 when any is stale (a unit test runs it, so CI fails
on a stale reference). Nothing here is hand-maintained per command or per field: a new command, option, field
or enum value shows up by itself, and one without a description fails tests/unit/test_docs.py.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import typer
import typer.main
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from runner.backends import ENGINES, config_class
from runner.base.errors import ExitCode
from runner.cli.app import app
from runner.record.models import JOURNAL_MODELS, DescribedEnum, NotifyTargets, RunOwner, StatusReport
from runner.record.queue import QueueTicket
from runner.usecases.discard import DiscardedRepo
from runner.usecases.known_repos import KnownRepo
from runner.usecases.review.cache import ReviewCache

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Where each journal model lives on disk (default: "<key>.json" in the journal directory).
JOURNAL_FILE_NAMES = {"iteration": "iteration-NNNN.json"}
# Persisted models outside the journal directory: (title, file in docs/schema/, model).
OTHER_FILES: list[tuple[str, str, type[BaseModel]]] = [
    ("The agent's status report ($HARNESS_STATUS_FILE)", "status-report", StatusReport),
    ("owner.json (in a run directory)", "run-owner", RunOwner),
    ("discarded/REPO-KEY.json (in the harness home)", "discarded-repo", DiscardedRepo),
    ("repositories/REPO-KEY.json (in the harness home)", "known-repo", KnownRepo),
    (".review-cache.json (in a session's journal)", "review-cache", ReviewCache),
    ("queue/REPO-KEY-SESSION.json (in the harness home)", "queue-ticket", QueueTicket),
    ("notify/REPO-KEY-SESSION.json (in the harness home)", "notify-targets", NotifyTargets),
]


def cell(text: str, *, code: bool = False) -> str:
    """Text safe inside a Markdown table cell, and not taken for HTML (a code span needs no escaping)."""
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if code else text.replace("<", "&lt;").replace(">", "&gt;")


def prose(text: str) -> str:
    """A help text as Markdown paragraphs: click's blank-line paragraphs kept, no raw HTML."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.replace("\b", "").strip())]
    return "\n\n".join(p.replace("<", "&lt;").replace(">", "&gt;") for p in paragraphs if p)


# ---------------------------------------------------------------------------------------------- the CLI


def _visible_commands(command: Any, ctx: typer.Context) -> Iterator[tuple[Any, typer.Context]]:
    """Each command of the tree under `command`, depth first in the app's order, hidden ones left out."""
    yield command, ctx
    if not hasattr(command, "list_commands"):
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        yield from _visible_commands(sub, typer.Context(sub, info_name=name, parent=ctx, **sub.context_settings))


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


_SUFFIX = re.compile(r"\s*\[(required|default: [^\]]*|env var: [^\]]*)\]")


def _param_row(names: str, help_text: str) -> str:
    """One table row: click's help record, its `[default: x]` / `[required]` suffixes made readable."""
    extras = []
    for match in _SUFFIX.finditer(help_text):
        word = match.group(1)
        if word == "required":
            extras.append("**Required.**")
        else:
            key, _, value = word.partition(": ")
            extras.append(f"{key.capitalize()}: `{value}`.")
    text = " ".join([_SUFFIX.sub("", help_text).strip(), *extras]).strip()
    return f"| {cell(names, code=True)} | {cell(text)} |"


def _command_section(command: Any, ctx: typer.Context) -> list[str]:
    path = ctx.command_path
    lines = [f"## `{path}`", ""]
    if command.help:
        lines += [prose(command.help), ""]
    lines += ["```text", " ".join([path, *command.collect_usage_pieces(ctx)]), "```", ""]
    rows: dict[str, list[str]] = {"argument": [], "option": []}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param.name == "help":  # hidden, or the -h/--help every command has
            continue
        rows[param.param_type_name].append(_param_row(*record))
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        if rows[kind]:
            lines += [f"**{title}**", "", f"| {kind} | description |", "|---|---|", *rows[kind], ""]
    if command.epilog:
        lines += [prose(command.epilog), ""]
    return lines


def exit_codes() -> list[str]:
    meanings = ExitCode.describe()
    missing = [code.name for code in ExitCode if not meanings.get(code)]
    if missing:
        raise SystemExit(f"ExitCode without a description in runner/base/errors.py: {', '.join(missing)}")
    return [
        "| code | name | meaning |",
        "|---|---|---|",
        *[f"| {code.value} | `{code.name}` | {cell(meanings[code])} |" for code in ExitCode],
    ]


def cli_reference() -> str:
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="harness", **root.context_settings)
    tree = list(_visible_commands(root, ctx))
    leaves = [(cmd, c) for cmd, c in tree[1:] if not hasattr(cmd, "list_commands")]
    parts = [
        "# Command-line reference",
        "",
        "Generated by `make docs` from the typer app (`runner/cli/app.py`); do not edit by hand.",
        "Every command also takes `-h` / `--help`.",
        "",
        "| command | what it does |",
        "|---|---|",
        *[
            f"| [`{c.command_path}`](#{_anchor(c.command_path)}) | {cell(cmd.get_short_help_str(limit=200))} |"
            for cmd, c in leaves
        ],
        "",
        "## Exit codes",
        "",
        "The same for every command.",
        "",
        *exit_codes(),
        "",
    ]
    for command, c in tree:
        parts += _command_section(command, c)
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- the journal


def _nested_types(annotation: Any) -> Iterator[type]:
    """The models and enums an annotation refers to (through unions, lists and the like)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel | Enum):
        yield annotation
    for arg in get_args(annotation):
        yield from _nested_types(arg)


def referenced(roots: list[type[BaseModel]]) -> tuple[list[type[BaseModel]], list[type[Enum]]]:
    """Every model and enum reachable from `roots`, in order of first appearance (roots first)."""
    models: list[type[BaseModel]] = list(roots)
    enums: list[type[Enum]] = []
    for model in models:  # grows while it is walked
        for field in model.model_fields.values():
            for found in _nested_types(field.annotation):
                if issubclass(found, BaseModel) and found not in models:
                    models.append(found)
                elif issubclass(found, Enum) and found not in enums:
                    enums.append(found)
    return models, enums


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", datetime: "date-time (ISO 8601)"}
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        args = sorted(get_args(annotation), key=lambda a: a is type(None))  # null last
        return " or ".join(type_text(a) for a in args)
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"object: {type_text(key)} → {type_text(value)}"
    if origin is Literal:
        return " or ".join(f'`"{v}"`' for v in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel | Enum):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return _SCALARS.get(annotation, str(annotation))


def _constraints(field: FieldInfo) -> str:
    said = []
    for meta in field.metadata:
        said += [f"{sign} {getattr(meta, name)}" for name, sign in _BOUNDS if getattr(meta, name, None) is not None]
        if getattr(meta, "max_length", None) is not None:
            said.append(f"at most {meta.max_length} characters")
        if getattr(meta, "pattern", None) is not None:
            said.append(f"matches `{meta.pattern}`")
    return ", ".join(said)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    factory = field.default_factory
    if factory is not None:
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "its defaults"
        if factory in (list, dict):
            return f"`{json.dumps(factory())}`"
        return "time of writing"  # utcnow, the only other factory
    value = field.default.value if isinstance(field.default, Enum) else field.default
    return f"`{json.dumps(value)}`"


def model_table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        kind = type_text(field.annotation)
        if bounds := _constraints(field):
            kind += f", {bounds}"
        rows.append(f"| `{key}` | {cell(kind)} | {cell(_default(field))} | {cell(field.description or '')} |")
    return rows


def enum_table(enum: type[Enum]) -> list[str]:
    meanings: Mapping[str, str] = enum.describe() if issubclass(enum, DescribedEnum) else {}
    return [
        "| value | meaning |",
        "|---|---|",
        *[f"| `{m.value}` | {cell(meanings.get(m.value, ''))} |" for m in enum],
    ]


JOURNAL_INTRO = """\
# The journal

Every session keeps a journal on the host, in the user's repository, where the original Solo Harness kept it:

```text
<repo>/memory/context-db/sessions/<session>/artifacts/solo-harness/
├── objective.md              what was asked
├── run-summary.json          current state and progress   (written only by the supervisor)
├── control.json              stop requests and notes      (written at creation, then by `stop` / `note`)
├── iteration-0001.json       what happened in iteration 1
├── iteration-0001.log        its output (capped at 8 MiB with a truncation marker, secrets redacted)
├── iteration-0001.check.log  the --check command's output, when it ran
├── gateway.log               one JSON line per model request (model, status, tokens, latency, cost)
├── egress.log                each connection the egress proxy allowed or refused (--network allowlist)
├── supervisor.log            a detached supervisor's log
├── .control.lock             serialises writers of control.json
└── .supervisor.lock          held by the live supervisor; readers only query it
```

The directory is kept out of git by one line in `.git/info/exclude`
(`/memory/context-db/sessions/*/artifacts/solo-harness/`), added on the first run. `HARNESS_JOURNAL_ROOT`
replaces `<repo>/memory/context-db/sessions` (then no exclude line is written). The container never sees the
journal: it is not inside any mount.

Every JSON file is a pydantic model (`runner/record/models.py`) with a published JSON Schema in `docs/schema/`, written
atomically (temporary file in the same directory, fsync, rename, fsync of the directory), so a reader sees the
old file or the new one, never half of one. Field names follow the original tool: camelCase, `schemaVersion`,
`kind`. Readers ignore fields they do not know, and older schema versions are upgraded on read by named steps
(`runner.record.journal.UPGRADES`). Writers of `control.json` hold an exclusive lock on `.control.lock` for each
read-modify-write, so concurrent `stop` and `note` calls lose nothing. `harness status` reports a `running`
session whose supervisor is gone (its lock is free) as `interrupted`.

This page is generated by `make docs` from the models' field descriptions; do not edit it by hand.
"""


ENGINES_INTRO = """\
The `backend` of run-summary.json and owner.json ([EngineRef](#engineref)) names its engine by `type` and holds
that engine's configuration, as the engine defines it (`runner/backends/<engine>/config.py`); the engine refuses
a field it does not know when the session's engine is opened. Each engine's fields:"""


def journal_reference() -> str:
    files: list[tuple[str, str, type[BaseModel]]] = [
        (JOURNAL_FILE_NAMES.get(key, f"{key}.json"), key, model) for key, model in JOURNAL_MODELS.items()
    ]
    files += [(title, schema, model) for title, schema, model in OTHER_FILES]
    models, enums = referenced([model for _, _, model in files])
    parts = [JOURNAL_INTRO]
    for title, schema, model in files:
        parts += [f"## {title}", "", prose(model.__doc__ or ""), ""]
        parts += [f"JSON Schema: [{schema}.schema.json](schema/{schema}.schema.json)", "", *model_table(model), ""]
    parts += ["## Nested objects", ""]
    for model in models[len(files) :]:
        parts += [f"### {model.__name__}", "", prose(model.__doc__ or ""), "", *model_table(model), ""]
    parts += ["## Engine configurations", "", prose(ENGINES_INTRO), ""]
    for name in ENGINES:
        model = config_class(name)
        parts += [f"### {model.__name__}", "", prose(model.__doc__ or ""), "", *model_table(model), ""]
    parts += ["## Values", ""]
    for enum in enums:
        parts += [f"### {enum.__name__}", "", prose(enum.__doc__ or ""), "", *enum_table(enum), ""]
    return "\n".join(parts).rstrip() + "\n"


def schemas() -> dict[str, str]:
    models: dict[str, type[BaseModel]] = dict(JOURNAL_MODELS)
    models.update({schema: model for _, schema, model in OTHER_FILES})
    return {
        f"{name}.schema.json": json.dumps(m.model_json_schema(by_alias=True), indent=2, ensure_ascii=False) + "\n"
        for name, m in models.items()
    }


def outputs() -> dict[Path, str]:
    files = {DOCS / "cli.md": cli_reference(), DOCS / "journal.md": journal_reference()}
    files.update({DOCS / "schema" / name: text for name, text in schemas().items()})
    return files


def stale_files() -> list[Path]:
    """Generated files that differ from what the code produces now, and schema files nothing produces."""
    wanted = outputs()
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    stale += [path for path in sorted((DOCS / "schema").glob("*.schema.json")) if path not in wanted]
    return stale


def main() -> int:
    if "--check" in sys.argv:
        stale = stale_files()
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            sys.stderr.write(f"stale generated docs (run 'make docs'): {names}\n")
            return 1
        return 0
    wanted = outputs()
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for path in (DOCS / "schema").glob("*.schema.json"):
        if path not in wanted:  # a model that is gone leaves no schema behind
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
