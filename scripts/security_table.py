"""Turn the attack suite's results (HARNESS_SECURITY_REPORT JSON) into the table of docs/security.md.

`python scripts/security_table.py RESULTS.json` prints the table and rewrites the part of
docs/security.md between the table markers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
BEGIN, END = "<!-- attack-table:begin -->", "<!-- attack-table:end -->"
SHOW = {"passed": "contained", "failed": "**NOT CONTAINED**", "skipped": "not run"}


def table(results: list[dict[str, object]]) -> str:
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

    lines = ["| # | attack | runc | runsc (gVisor) |", "|---|---|---|---|"]
    for (row, name), by_runtime in sorted(cells.items()):
        lines.append(f"| {row} | {name} | {verdict(by_runtime.get('runc'))} | {verdict(by_runtime.get('runsc'))} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text())
    text = table(results)
    sys.stdout.write(text)
    if DOC.exists():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    return 1 if any(r["outcome"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
