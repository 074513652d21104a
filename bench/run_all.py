"""Run every benchmark; with --doc, rewrite docs/performance.md from their output (`make bench`).

`--quick` runs the small versions (`make bench-quick`, and CI through tests/integration/test_bench_quick.py).
`--only NAME` runs some of them (repeatable). A benchmark that fails is reported and the others still run;
the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import (
    cli_startup,
    gateway_latency,
    harvest_large,
    iteration_overhead,
    log_throughput,
    many_sessions,
    race_overhead,
    setup_cache,
    setup_large_repo,
)
from bench._common import DOC, BenchError, Result, machine, write_section

BENCHMARKS: dict[str, Callable[[bool], Result]] = {
    iteration_overhead.NAME: iteration_overhead.measure,
    setup_large_repo.NAME: setup_large_repo.measure,
    harvest_large.NAME: harvest_large.measure,
    log_throughput.NAME: log_throughput.measure,
    cli_startup.NAME: cli_startup.measure,
    many_sessions.NAME: many_sessions.measure,
    gateway_latency.NAME: gateway_latency.measure,
    setup_cache.NAME: setup_cache.measure,
    race_overhead.NAME: race_overhead.measure,
}

INTRO = """# Performance

Written by `make bench` (`python -m bench.run_all --doc docs/performance.md`) from the benchmarks' own output:
do not edit by hand; a benchmark rewrites its section between its markers. Every figure is a median of
repetitions measured in the same run as its raw baseline, and the ratios (harness / baseline) are what matter:
this machine is shared with other developers' Docker tests, so absolute times drift with their load. Goals are
those of issue 10 (the model gateway's: issue 16); where one is missed the section says why and what would close
it. `make bench-quick` runs small versions of the same benchmarks (CI runs them for correctness only, never for
time). A benchmark run alone (`--only NAME`) rewrites its own section and the machine's; the others keep the
figures of their last run."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--doc", type=Path, nargs="?", const=DOC, help="rewrite this file's sections (default: docs/)")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark")
    args = p.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    if args.doc is not None:
        write_section("intro", INTRO, args.doc)
        write_section("machine", "## Machine\n\n" + machine(), args.doc)
    failed = []
    for name in names:
        start = time.monotonic()
        try:
            result = BENCHMARKS[name](args.quick)
        except BenchError as exc:
            print(f"bench {name}: error: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        print(result.text(), flush=True)
        print(f"  ({time.monotonic() - start:.0f} s)\n", flush=True)
        if args.doc is not None:
            text = result.markdown()
            if result.quick:
                text = text.replace("\n", " (quick version)\n", 1)
            write_section(name, text, args.doc)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
