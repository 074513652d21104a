"""Turn the attack suite's results (HARNESS_SECURITY_REPORT JSON) into the table of docs/security.md.

`python scripts/security_table.py RESULTS.json` prints the table and rewrites the part of
docs/security.md between the table markers. The rows of attacks that did not run keep their line, so
part of the suite can update its rows; `--replace` writes only the rows of RESULTS.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
BEGIN, END = "<!-- attack-table:begin -->", "<!-- attack-table:end -->"
SHOW = {"passed": "contained", "failed": "**NOT CONTAINED**", "skipped": "not run"}


def table(results: list[dict[str, object]], keep: dict[tuple[int, str], str] | None = None) -> str:
    """The table of `results`, plus the lines of `keep` (earlier rows) for attacks not among them."""
    cells: dict[tuple[int, str], dict[str, list[str]]] = {}
    for r in results:
        key = (int(str(r["row"])), str(r["name"]))
        cells.setdefault(key, {}).setdefault(str(r["runtime"]), []).append(str(r["outcome"]))

    def verdict(outcomes: list[str] | None) -> str:
        if not outcomes:
            return "n/a"
        if "failed" in outcomes:
            return SHOW["failed"]
        return SHOW["passed"] if "passed" in outcomes else SHOW["skipped"]

    rows = dict(keep or {})
    for (row, name), by_runtime in cells.items():
        rows[(row, name)] = (
            f"| {row} | {name} | {verdict(by_runtime.get('runc'))} | {verdict(by_runtime.get('runsc'))} |"
        )
    lines = ["| # | attack | runc | runsc (gVisor) |", "|---|---|---|---|"]
    return "\n".join(lines + [rows[key] for key in sorted(rows)]) + "\n"


def rows_of(table_text: str) -> dict[tuple[int, str], str]:
    """The data lines of a table written by `table`, by (row, attack)."""
    rows = {}
    for line in table_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].isdigit():
            rows[(int(cells[0]), "|".join(cells[1:-2]).strip())] = line.strip()
    return rows


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text())
    doc = DOC.read_text() if DOC.exists() else ""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        old, tail = rest.split(END, 1)
        text = table(results, None if "--replace" in sys.argv[2:] else rows_of(old))
        DOC.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    else:
        text = table(results)
    sys.stdout.write(text)
    return 1 if any(r["outcome"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
