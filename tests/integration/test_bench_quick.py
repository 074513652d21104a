"""The quick version of every benchmark runs, for correctness only: it completes, its figures are
positive, and the runs it drives leave intact journals (the benchmarks check those themselves and
raise BenchError otherwise). No timing is asserted: the machine is shared and noisy."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from bench import run_all
from bench._common import Result, write_section

# One worker: the two setup-cache tests share one run of it (quick() caches it in the process).
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("bench-quick")]

# A difference between two paths measured in the same run (the gateway's added latency): noise may
# make it negative, and that is not a fault.
SIGNED = ("added at ",)


@functools.cache
def quick(name: str) -> Result:
    """A quick benchmark's result, run once for the tests that read it (setup-cache takes minutes)."""
    return run_all.BENCHMARKS[name](True)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(run_all.BENCHMARKS))
def test_quick_benchmark_runs(name: str, tmp_path: Path) -> None:
    result = quick(name)
    assert result.quick and result.name == name
    assert result.measures and result.ratios
    for measure in result.measures:
        assert measure.samples, measure.title
        least = 0.0 if measure.unit == "%" else 1e-9  # idle supervisors may use no clock tick at all
        assert all(math.isfinite(v) and v >= least for v in measure.samples), (measure.title, measure.samples)
    assert all(math.isfinite(r.value) and (r.value >= 0 or r.title.startswith(SIGNED)) for r in result.ratios)
    doc = tmp_path / "performance.md"
    write_section(name, result.markdown(), doc)
    write_section(name, result.markdown(), doc)  # rewritten in place, never appended twice
    text = doc.read_text()
    assert text.count(f"<!-- bench:{name} -->") == 1 and result.title in text


def test_iteration_breakdown_names_every_phase() -> None:
    result = run_all.BENCHMARKS["iteration-overhead"](True)
    phases = dict(result.breakdown)
    for phase in ("prompt", "agent container: start", "agent container: wait",
                  "helper: checkpoint and sweep execs, total", "helper: sweep after the checkpoint (exec)",
                  "bundle: index-pack --strict, checks, install (host git)", "journal: iteration record"):  # fmt: skip
        assert phases.get(phase, 0) > 0, (phase, phases)
    # The resident helper starts once, in the first iteration: a median iteration starts only the agent.
    assert "helper container: start" not in phases, phases
    assert phases["iteration, end to end"] >= (
        phases["agent container: start"] + phases["helper: checkpoint and sweep execs, total"]
    )


def test_gateway_latency_measures_every_path_against_its_goals() -> None:
    from bench import gateway_latency

    result = run_all.BENCHMARKS[gateway_latency.NAME](True)
    titles = {m.title: m for m in result.measures}
    for _, _, path in gateway_latency.PATHS.values():
        for what in ("one request, to the last byte, p50", "one request, to the first byte, p50",
                     "32 streams, throughput", "32 streams at a model's pace, to the last byte, p50"):  # fmt: skip
            assert f"{path}: {what}" in titles, (path, what, sorted(titles))
        # Each answer streamed: its first byte came before its last (the client checked every answer).
        first = titles[f"{path}: one request, to the first byte, p50"].median
        assert 0 < first <= titles[f"{path}: one request, to the last byte, p50"].median, path
    goals = {r.title: r for r in result.ratios if r.goal is not None}
    assert set(goals) == {"added at p50 / 2 ms", "through the relay / direct, 32 streams' throughput"}, goals
    assert goals["through the relay / direct, 32 streams' throughput"].at_least
    assert any("counted every one" in fact for fact in result.facts), result.facts


@pytest.mark.timeout(600)
def test_setup_cache_measures_each_setup_twice_and_says_where_the_time_goes() -> None:
    from bench import setup_cache

    result = quick(setup_cache.NAME)
    titles = {m.title for m in result.measures}
    for variant in setup_cache.VARIANTS:
        for what in ("first session's setup, empty cache", "second session's setup, the first's cache",
                     "first session, harness run wall time", "second session, harness run wall time"):  # fmt: skip
            assert f"{variant.title}: {what}" in titles, (variant.key, what, sorted(titles))
    goals = {r.title for r in result.ratios if r.goal == setup_cache.GOAL}
    assert goals == {f"{v.title}: second / first setup" for v in setup_cache.VARIANTS}, goals
    # The benchmark checked each pair itself (every sdist built once, by the first session; none fetched by
    # the second): the second session of pip spends nothing on the sdists' builds.
    phases = dict(result.breakdown)
    pip = setup_cache.VARIANTS[0].title
    assert phases[f"{pip}, first: {setup_cache.SDISTS}"] > 0
    assert phases[f"{pip}, second: {setup_cache.SDISTS}"] == 0
    assert phases[f"{pip}, second: {setup_cache.BOOTSTRAP}"] > 0
    assert any("7 come as sdists" in fact for fact in result.facts), result.facts
    # The identical setup restored: its second session ran no setup step at all.
    restored = next(v for v in setup_cache.VARIANTS if v.snapshot).title
    assert [k for k in phases if k.startswith(f"{restored}, second:")] == [
        f"{restored}, second: {setup_cache.RESTORED}"
    ]
