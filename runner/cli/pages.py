"""Where a page of `report` goes: stdout, or a file written atomically (`--output`)."""

from __future__ import annotations

import sys
from pathlib import Path

from runner.base.atomic import write_atomic
from runner.base.errors import ExitCode, UsageError
from runner.base.output import neutralise


def write_page(text: str, output: Path | None) -> int:
    """The page on stdout, or atomically into `output` (and one line on stderr saying so)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return ExitCode.OK
    try:
        write_atomic(output, text)
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output} ({exc.strerror})") from None
    sys.stderr.write(f"wrote {neutralise(str(output))}\n")
    return ExitCode.OK
