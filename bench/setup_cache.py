"""Setup with a warm package cache: a second session's setup of the same project against the first's.

A Python web project (its `pyproject.toml` depends on flask, requests and pyyaml, its `test` extra on pytest)
is set up by `harness run --setup CMD --setup-allow-host 127.0.0.1:PORT`, the real CLI; the agent
(`--agent-cmd`) imports the dependencies and reports done at once; one iteration. The index is a stand-in on
host loopback: `http.server` serving the directory listing of build/bench-wheels (`make bench-wheels`: real
packages fetched ahead from PyPI; seven of the project's dependencies there as sdists that pip must build,
each with its build backend, which pip installs in an isolated build environment from the same index), read
with `--no-index --find-links`. Three setups, each as a user would write it:

- pip, as the docs' example: a virtualenv, pip bootstrapped into it from the index (harness-base has python3
  but no ensurepip), then `pip install -e '.[test]'`;
- the same with `--no-compile` (no bytecode written at install time), a common tuning;
- uv (`uv venv && uv pip install -e '.[test]'`), in an image built FROM harness-base with uv added (from uv's
  wheel, fetched ahead too), as a user's own image with uv would be (`--image`).

Each pair, for each setup: a fresh HARNESS_HOME (an empty package cache), a first session, then a second
session of the same project in the same home, with the cache the first left in `$HARNESS_HOME/cache/packages`
(mounted at /harness-cache during setup; PIP_CACHE_DIR and UV_CACHE_DIR point into it). The same index, at
the same URL, serves every session (pip keys a wheel it built by its sdist's URL). The setups' order rotates
from pair to pair; medians. Measured: the setup's duration as the harness records it (run-summary.json
`setup.durationSeconds`) and the wall time of `harness run`; time stamps between the setup's steps and pip's
own log (`--log`, in both sessions) tell where the time goes. Checked in every pair: the setup passed, the
agent imported every dependency, the first session fetched and built every sdist, the second built none and
fetched no sdist. Only loopback carries traffic.

Goal (issue 17 item 4): second / first <= 0.3x.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from bench._common import (
    IMAGE,
    BenchEnv,
    BenchError,
    Ratio,
    Result,
    _remove_as_agent,
    bench_env,
    git,
    harness_argv,
    main,
    run,
)

NAME = "setup-cache"
GOAL = 0.3
WHEELS = Path(__file__).resolve().parent.parent / "build" / "bench-wheels"
TOOLS = WHEELS / "tools"  # uv's wheel: not served, the image with uv is built from it
RUN_TIMEOUT = 1800.0
FULL_PAIRS = 5
QUICK_PAIRS = 1

PYPROJECT = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "webapp"
version = "0.1.0"
dependencies = ["flask>=3", "requests>=2.31", "pyyaml>=6"]

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.setuptools]
packages = ["webapp"]
"""
APP = '''"""A small web app: a route reads a YAML file, a helper calls another service."""

import flask
import requests
import yaml

app = flask.Flask(__name__)


@app.get("/config")
def config():
    with open("config.yaml") as f:
        return yaml.safe_load(f) or {}


def fetch(url: str) -> int:
    return requests.get(url, timeout=5).status_code
'''
TEST = """from webapp import app


def test_app_has_a_config_route():
    assert "/config" in [rule.rule for rule in app.url_map.iter_rules()]
"""
IMPORTS = "flask, requests, yaml, pytest, markupsafe, urllib3, certifi, idna, webapp"
MARK = "bench-mark"
PIP_LOG = "pip-log"
PIP_LOG_FILE = "/tmp/bench-pip.log"  # in the setup's container
# The lines of pip's log the breakdown reads: its first, the top-level steps and every spinner.
PIP_LOG_LINES = (
    "Using pip |Using cached wheel link: |Obtaining |Collecting |Building wheels for|Installing collected|"
    "Successfully installed|: started$|: finished with status"
)


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    steps: tuple[tuple[str, str], ...]  # (mark, command): {index}, {find} and {pip} filled in
    uv: bool = False  # runs in the image with uv
    # True: the second session may restore the first's setup snapshot (the harness's reuse of an identical
    # setup); False: the snapshot is removed between the sessions, so only the package cache serves the second.
    snapshot: bool = False

    def command(self, index: str, pip_wheel: str) -> tuple[str, str]:
        """(the command the harness runs, the same as a user would write it: without time stamps and log)."""
        steps = [(mark, cmd.format(index=index, find=f"--no-index --find-links {index}", pip=pip_wheel))
                 for mark, cmd in self.steps]  # fmt: skip
        plain = " && ".join(cmd for _, cmd in steps)
        stamp = 'echo "' + MARK + ' {} $(date +%s.%N)"'
        timed = [stamp.format("start")]
        for mark, cmd in steps:
            logged = cmd.replace(" -e ", f" --log {PIP_LOG_FILE} -e ") if self.pip_log and mark == "install" else cmd
            timed += [logged, stamp.format(mark)]
        if self.pip_log:
            timed.append(f"{{ grep -E '{PIP_LOG_LINES}' {PIP_LOG_FILE} | sed 's/^/{PIP_LOG} /'; true; }}")
        return " && ".join(timed), plain

    @property
    def pip_log(self) -> bool:
        return not self.uv


_FETCH_PIP = 'python3 -c \'import urllib.request as u; u.urlretrieve("{index}{pip}", "/tmp/pip.whl")\''
VARIANTS = (
    Variant("pip", "pip, as the docs' example", (
        ("venv", "python3 -m venv --without-pip .venv"),  # harness-base has no ensurepip: pip comes from the index
        ("pip", _FETCH_PIP + " && .venv/bin/python /tmp/pip.whl/pip install -q --ignore-installed {find} pip"),
        ("install", ".venv/bin/pip install -q {find} -e '.[test]'"),
    )),
    Variant("pip-restored", "pip, the identical setup restored", (
        ("venv", "python3 -m venv --without-pip .venv"),
        ("pip", _FETCH_PIP + " && .venv/bin/python /tmp/pip.whl/pip install -q --ignore-installed {find} pip"),
        ("install", ".venv/bin/pip install -q {find} -e '.[test]'"),
    ), snapshot=True),
    Variant("pip-no-compile", "pip --no-compile", (
        ("venv", "python3 -m venv --without-pip .venv"),
        ("pip", _FETCH_PIP + " && .venv/bin/python /tmp/pip.whl/pip install -q --no-compile --ignore-installed "
                "{find} pip"),
        ("install", ".venv/bin/pip install -q --no-compile {find} -e '.[test]'"),
    )),
    Variant("uv", "uv (an image with uv)", (
        ("venv", "uv venv -q"),
        ("install", "uv pip install -q {find} -e '.[test]'"),
    ), uv=True),
)  # fmt: skip


def agent_command(imports: str | None = IMPORTS) -> str:
    done = json.dumps({"state": "done", "summary": "the dependencies import"})
    check = f"python -c 'import {imports}' && " if imports else ""
    return f"{check}printf '%s' '{done}' > \"$HARNESS_STATUS_FILE\""


# --- the index -------------------------------------------------------------------------------------------


@dataclass
class Hits:
    """What the index served (path, bytes), since the last take()."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    served: list[tuple[str, int]] = field(default_factory=list)

    def take(self) -> list[tuple[str, int]]:
        with self.lock:
            out, self.served = self.served, []
        return out


class _Index(http.server.SimpleHTTPRequestHandler):
    hits: Hits

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        start = source.tell()
        super().copyfile(source, outputfile)
        with self.hits.lock:
            self.hits.served.append((self.path, source.tell() - start))

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def index(hits: Hits) -> Iterator[str]:
    """build/bench-wheels on host loopback: a directory listing pip and uv read with --find-links."""
    handler = type("Index", (_Index,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(WHEELS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass(frozen=True)
class Packages:
    wheels: list[str]  # project names, normalized
    sdists: list[str]
    files: int
    mb: float
    pip_wheel: str
    uv_wheel: Path


def packages() -> Packages:
    if not (WHEELS / ".complete").exists():
        raise BenchError(f"no packages in {WHEELS}: run 'make bench-wheels' (it fetches them once from PyPI)")
    files = sorted(p for p in WHEELS.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    pips = [p.name for p in files if p.name.startswith("pip-")]
    uvs = sorted(TOOLS.glob("uv-*.whl"))
    if not pips or not uvs:
        raise BenchError(f"no pip or uv wheel in {WHEELS}: rm {WHEELS}/.complete and run 'make bench-wheels'")
    return Packages(
        wheels=[_dist(p.name) for p in files if p.name.endswith(".whl")],
        sdists=[_dist(p.name) for p in files if p.name.endswith(".tar.gz")],
        files=len(files),
        mb=sum(p.stat().st_size for p in files) / 1e6,
        pip_wheel=pips[0],
        uv_wheel=uvs[-1],
    )


def _dist(filename: str) -> str:
    return re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()


@contextmanager
def uv_image(env: BenchEnv, wheel: Path) -> Iterator[str]:
    """harness-base + uv (its binary from uv's wheel): a user's image with uv, built FROM a harness image."""
    ctx = env.tmp / "uv-image"
    ctx.mkdir()
    with zipfile.ZipFile(wheel) as whl:
        member = next(n for n in whl.namelist() if re.fullmatch(r"uv-[^/]+\.data/scripts/uv", n))
        (ctx / "uv").write_bytes(whl.read(member))
    (ctx / "uv").chmod(0o755)
    (ctx / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY uv /usr/local/bin/uv\n")
    tag = f"harness-bench-uv:{env.bench_id}"
    run(["docker", "build", "-q", "--label", env.label, "-t", tag, str(ctx)])
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


# --- one session -----------------------------------------------------------------------------------------


@dataclass
class Session:
    setup_s: float  # run-summary.json setup.durationSeconds
    wall_s: float  # `harness run`, end to end
    phases: dict[str, float]
    built: list[str]  # sdists pip built into wheels (pip's log)
    cached: list[str]  # wheels pip took from its cache of built wheels (pip's log)
    installed: list[str]  # (pip's log)
    served: list[tuple[str, int]]  # what the index served to this session

    @property
    def sdists_fetched(self) -> list[str]:
        return sorted({_dist(Path(path).name) for path, _ in self.served if path.endswith(".tar.gz")})


def project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "webapp").mkdir()
    (path / "webapp" / "__init__.py").write_text(APP)
    (path / "tests").mkdir()
    (path / "tests" / "test_app.py").write_text(TEST)
    (path / "README.md").write_text("# webapp\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "a web app with real dependencies")
    return path


def harness_run(home: Path, repo: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "HARNESS_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run(harness_argv("run", *args, "--max-iterations", "1", "--json"), cwd=repo, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL,
                          check=False)  # fmt: skip
    return proc, time.perf_counter() - start


def run_session(home: Path, repo: Path, session: str, variant: Variant, setup: str, port: int, hits: Hits,
                image: str | None) -> Session:  # fmt: skip
    args = ["--objective", "set up and stop", "--session", session, "--agent-cmd", agent_command(), "--setup",
            setup, "--setup-allow-host", f"127.0.0.1:{port}", *(["--image", image] if image else [])]  # fmt: skip
    hits.take()
    proc, wall = harness_run(home, repo, *args)
    served = hits.take()
    journal = repo / "memory/context-db/sessions" / session / "artifacts/solo-harness"
    if not (journal / "run-summary.json").exists():
        raise BenchError(f"{session}: no run-summary.json (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    summary = json.loads((journal / "run-summary.json").read_text())
    setup_record = summary.get("setup") or {}
    log = (journal / "setup.log").read_text(errors="replace") if (journal / "setup.log").exists() else ""
    if not setup_record.get("passed"):
        raise BenchError(f"{session}: the setup failed (exit {setup_record.get('exitCode')}): {log.strip()[-800:]}")
    if proc.returncode != 0 or summary.get("status") != "completed":
        raise BenchError(f"{session}: {summary.get('status')} ({summary.get('stopReason')}), exit {proc.returncode}: "
                         f"{proc.stderr.strip()[-400:]}")  # fmt: skip
    record = json.loads((journal / "iteration-0001.json").read_text())
    if record.get("outcome") != "done":
        raise BenchError(f"{session}: the agent could not import the dependencies: {record.get('outcome')}")
    duration = float(setup_record["durationSeconds"])
    if setup_record.get("restored"):
        # The harness restored an identical setup's outputs: no pip ran, so there is no pip log to read.
        return Session(duration, wall, {RESTORED: duration}, [], [], [], served)
    phases, built, cached, installed = parse_log(log, duration, variant)
    return Session(duration, wall, phases, built, cached, installed, served)


_SPIN = re.compile(r"^\s+(?P<what>.+): (?P<state>started|finished with status '\w+')$")
_BUILD = re.compile(r"^Building (?:wheel|editable) for (?P<name>\S+) ")

VENV = "venv"
RESTORED = "the setup's outputs restored from its snapshot"
BOOTSTRAP = "pip bootstrap (its wheel fetched, installed into the venv)"
PIP_START = "pip install: start-up to its first step"
PROJECT = "pip install: the project's build environment, metadata and editable build"
SDISTS = "pip install: the sdists' build environments, metadata and wheel builds"
RESOLVE = "pip install: resolving and fetching (index pages, wheels, the cache)"
UNPACK = "pip install: installing the wheels (unpack; bytecode unless --no-compile)"
PIP_EXIT = "pip install: exit"
UV_INSTALL = "uv pip install -e '.[test]'"
OUTSIDE = "outside the steps (container exit, the harness's polling)"


def parse_log(log: str, duration: float, variant: Variant) -> tuple[dict[str, float], list[str], list[str], list[str]]:
    """From setup.log: (seconds per phase, sdists built, wheels taken from the cache, packages installed)."""
    marks: dict[str, float] = {}
    pip: list[tuple[float, str]] = []
    for line in log.splitlines():
        if line.startswith(MARK + " "):
            _, name, stamp = line.split()
            marks[name] = float(stamp)
        elif line.startswith(PIP_LOG + " "):
            stamp, _, message = line[len(PIP_LOG) + 1 :].partition(" ")
            # pip stamps its log with the container's clock in its time zone (none set: UTC), to the millisecond
            pip.append((datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S,%f").replace(tzinfo=UTC).timestamp(), message))
    expected = {"start", *(mark for mark, _ in variant.steps)}
    if set(marks) != expected or (variant.pip_log and not pip):
        raise BenchError(f"the setup's log lacks its time stamps or pip's log: {log.strip()[-400:]}")
    outside = duration - (marks["install"] - marks["start"])
    if not variant.pip_log:
        phases = {VENV: marks["venv"] - marks["start"], UV_INSTALL: marks["install"] - marks["venv"], OUTSIDE: outside}
        return phases, [], [], []
    project_s = sdists_s = 0.0
    context = ""
    started: dict[str, float] = {}
    built: list[str] = []
    cached: list[str] = []
    installed: list[str] = []
    install_start = install_end = None
    for at, message in pip:
        if message.startswith("Using cached wheel link: "):  # a wheel pip built before, from its cache
            cached.append(_dist(message.rsplit("/", 1)[-1]))
            continue
        if not message.startswith(" "):  # a top-level step (indented lines are a build environment's pip)
            context = message
            if message.startswith("Installing collected packages"):
                install_start = at
            elif message.startswith("Successfully installed"):
                install_end = at
                installed = [re.sub(r"-[^-]+$", "", p) for p in message.split()[2:]]
            continue
        spin = _SPIN.match(message)
        if spin is None:
            continue
        if spin["state"] == "started":
            started[spin["what"]] = at
            continue
        seconds = at - started.pop(spin["what"], at)
        build = _BUILD.match(spin["what"])
        if build is not None and build["name"] != "webapp":
            built.append(_dist(build["name"]))
        if context.startswith("Obtaining file:///workspace") or (build is not None and build["name"] == "webapp"):
            project_s += seconds
        else:
            sdists_s += seconds
    if install_start is None or install_end is None:
        raise BenchError("pip's log lacks its install steps")
    phases = {
        VENV: marks["venv"] - marks["start"],
        BOOTSTRAP: marks["pip"] - marks["venv"],
        PIP_START: pip[0][0] - marks["pip"],
        PROJECT: project_s,
        SDISTS: sdists_s,
        RESOLVE: max(install_start - pip[0][0] - project_s - sdists_s, 0.0),
        UNPACK: install_end - install_start,
        PIP_EXIT: marks["install"] - install_end,
        OUTSIDE: outside,
    }
    return phases, sorted(set(built)), sorted(set(cached)), installed


# --- the pairs -------------------------------------------------------------------------------------------


def _remove_home(env: BenchEnv, home: Path) -> None:
    """The copies and the package cache belong to the agent uid: removed by a container of that uid."""
    if os.geteuid() != 0 and home.exists():
        for root in [*(home / "runs").glob("*"), home / "cache" / "packages"]:
            if root.exists():
                _remove_as_agent(env, root)
    shutil.rmtree(home, ignore_errors=True)


def _cache_mb(home: Path) -> float:
    root = home / "cache" / "packages"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@dataclass
class Samples:
    firsts: list[Session] = field(default_factory=list)
    seconds: list[Session] = field(default_factory=list)
    cache_mb: list[float] = field(default_factory=list)


def measure(quick: bool) -> Result:
    pkgs = packages()
    pairs = QUICK_PAIRS if quick else FULL_PAIRS
    hits = Hits()
    samples = {v.key: Samples() for v in VARIANTS}
    plain: dict[str, str] = {}
    with bench_env("setup-cache") as env, index(hits) as url, uv_image(env, pkgs.uv_wheel) as uv:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        repo = project(env.tmp / "webapp")
        _warm_up(env, repo, uv)
        for n in range(pairs):
            for variant in VARIANTS[n % len(VARIANTS) :] + VARIANTS[: n % len(VARIANTS)]:
                command, plain[variant.key] = variant.command(url, pkgs.pip_wheel)
                image = uv if variant.uv else None
                home = env.tmp / f"home-{variant.key}-{n}"
                s = samples[variant.key]
                try:
                    first = run_session(home, repo, f"{variant.key}-first-{n}", variant, command, port, hits, image)
                    if not variant.snapshot:  # the package cache alone serves the second session
                        _remove_as_agent(env, home / "cache" / "packages" / "setups")
                    s.cache_mb.append(_cache_mb(home))
                    second = run_session(home, repo, f"{variant.key}-second-{n}", variant, command, port, hits, image)
                finally:
                    _remove_home(env, home)
                _check_pair(f"{variant.key}, pair {n + 1}", variant, first, second, pkgs)
                s.firsts.append(first)
                s.seconds.append(second)
                ratio = second.setup_s / first.setup_s
                print(f"  pair {n + 1}/{pairs}, {variant.title}: setup {first.setup_s:.1f} s then "
                      f"{second.setup_s:.1f} s ({ratio:.2f}x)", file=sys.stderr, flush=True)  # fmt: skip
    return _result(quick, pkgs, samples, plain)


def _warm_up(env: BenchEnv, repo: Path, uv: str) -> None:
    """One short session in each image (interpreters, image layers, the CLI): nothing measured."""
    for image in (None, uv):
        home = env.tmp / "home-warm-up"
        try:
            proc, _ = harness_run(home, repo, "--objective", "warm up", "--session", f"warm-up-{bool(image)}",
                                  "--agent-cmd", agent_command(None), "--setup", "python3 -c pass",
                                  *(["--image", image] if image else []))  # fmt: skip
        finally:
            _remove_home(env, home)
        if proc.returncode != 0:
            raise BenchError(f"the warm-up run failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")


def _check_pair(what: str, variant: Variant, first: Session, second: Session, pkgs: Packages) -> None:
    """Every sdist fetched (and, by pip, built) once, by the first session; the second took them from the cache."""
    expected = sorted(pkgs.sdists)
    if first.sdists_fetched != expected:
        raise BenchError(f"{what}: the first session fetched the sdists {first.sdists_fetched}, not {expected}")
    if second.sdists_fetched:
        raise BenchError(f"{what}: the second session fetched sdists again: {second.sdists_fetched}")
    if variant.snapshot:
        if list(second.phases) != [RESTORED]:
            raise BenchError(f"{what}: the second session ran the setup again instead of restoring it")
        return
    if list(second.phases) == [RESTORED]:
        raise BenchError(f"{what}: the second session restored a snapshot that was removed")
    if not variant.pip_log:
        return
    if first.built != expected:
        raise BenchError(f"{what}: the first session built {first.built}, not the project's sdists {expected}")
    if second.built:
        raise BenchError(f"{what}: the second session built {second.built} again: the cache was not used")
    if not set(expected) <= set(second.cached):
        raise BenchError(f"{what}: the second session took {second.cached} from the cache, not {expected}")
    if sorted(first.installed) != sorted(second.installed) or "webapp" not in first.installed:
        raise BenchError(f"{what}: the sessions installed {first.installed} and {second.installed}")


def _median(sessions: list[Session], phase: str) -> float:
    return statistics.median(s.phases[phase] for s in sessions)


def _result(quick: bool, pkgs: Packages, samples: dict[str, Samples], plain: dict[str, str]) -> Result:
    result = Result(NAME, "Setup with a warm package cache", quick)
    ratios: dict[str, float] = {}
    for v in VARIANTS:
        s = samples[v.key]
        first = result.add(f"{v.title}: first session's setup, empty cache", [x.setup_s for x in s.firsts])
        second = result.add(f"{v.title}: second session's setup, the first's cache", [x.setup_s for x in s.seconds])
        first_wall = result.add(f"{v.title}: first session, harness run wall time", [x.wall_s for x in s.firsts])
        second_wall = result.add(f"{v.title}: second session, harness run wall time", [x.wall_s for x in s.seconds])
        ratios[v.key] = second.median / first.median
        result.ratios.append(Ratio(f"{v.title}: second / first setup", ratios[v.key], GOAL, why=_why(v, s)))
        result.ratios.append(Ratio(f"{v.title}: second / first, harness run wall time",
                                   second_wall.median / first_wall.median))  # fmt: skip
    shown = {"pip": ("first", "second"), "pip-restored": ("second",), "pip-no-compile": ("second",),
             "uv": ("first", "second")}  # fmt: skip
    for v in VARIANTS:
        for label in shown[v.key]:
            sessions = samples[v.key].firsts if label == "first" else samples[v.key].seconds
            result.breakdown += [(f"{v.title}, {label}: {p}", _median(sessions, p)) for p in sessions[0].phases]
    result.facts = _facts(pkgs, samples, plain)
    result.notes = _notes(samples, ratios)
    return result


def _facts(pkgs: Packages, samples: dict[str, Samples], plain: dict[str, str]) -> list[str]:
    pip = samples["pip"]
    installed = sorted(pip.firsts[0].installed, key=str.lower)
    sdists = pip.firsts[0].built
    wheels = [p for p in installed if _dist(p) not in sdists and p != "webapp"]
    backends = sorted(set(pkgs.wheels) - {_dist(p) for p in installed} - {"pip"})
    pairs = len(pip.firsts)
    facts = [
        f"goal (issue 17 item 4): a second session's setup of a project with real dependencies <= {GOAL:g}x the "
        "first's, with the package cache the first left",
        f"{pairs} pair(s) of sessions for each of the {len(VARIANTS)} setups; each pair with a fresh HARNESS_HOME: a "
        "first session of the project (empty package cache), then a second session of the same project in the same "
        "home (the cache the first left); the setups' order rotates from pair to pair; medians. Each session is "
        "`harness run --setup CMD --setup-allow-host 127.0.0.1:PORT --max-iterations 1` (the real CLI; "
        "harness-base, or for uv an image built FROM it with uv's binary added; the default limits: 1 CPU) with "
        "an `--agent-cmd` that imports the dependencies and reports done",
        "the project: `pyproject.toml` (setuptools) with dependencies flask>=3, requests>=2.31, pyyaml>=6 and a "
        f"`test` extra pytest>=8; `pip install -e '.[test]'` installs {len(installed)} packages: the project "
        f"(editable) and {', '.join(p for p in installed if p != 'webapp')}",
        f"of those, {len(sdists)} come as sdists that pip or uv builds into wheels: {', '.join(sdists)} (markupsafe's "
        "C speedups do not compile, the image has no compiler, and it falls back to pure Python); "
        f"{len(wheels)} as wheels: {', '.join(wheels)}; the sdists' build backends, installed in isolated build "
        f"environments from the same index: {', '.join(backends)} (wheels)",
        f"the index: {pkgs.files} files ({pkgs.mb:.1f} MB) in build/bench-wheels (`make bench-wheels`, fetched "
        "ahead from PyPI), served by http.server on 127.0.0.1 as a directory listing (`--no-index --find-links`), "
        "at the same URL for every session; nothing throttled",
    ]
    for v in VARIANTS:
        s = samples[v.key]
        per_pair = ", ".join(f"{b.setup_s / a.setup_s:.2f}x" for a, b in zip(s.firsts, s.seconds, strict=True))
        first_mb = statistics.median(sum(b for _, b in x.served) / 1e6 for x in s.firsts)
        second_mb = statistics.median(sum(b for _, b in x.served) / 1e6 for x in s.seconds)
        facts.append(
            f"{v.title}: `{plain[v.key]}`; second / first per pair: {per_pair}; the index served {first_mb:.1f} MB "
            f"to a first session, {second_mb:.1f} MB and no sdist to a second; the package cache after the first "
            f"session: {statistics.median(s.cache_mb):.1f} MB"
        )
    facts.append(
        f"the benchmark adds time stamps between the steps (`date`) and, for pip, `--log {PIP_LOG_FILE}` to "
        "`pip install` and a grep of that log at the end, in every session alike; the phases below come from them"
    )
    return facts


def _why(v: Variant, s: Samples) -> str:
    second = statistics.median(x.setup_s for x in s.seconds)
    if v.snapshot:
        return (f"the harness restored the first session's setup outputs ({second:.1f} s): the same image, command, "
                "network and inputs, so the setup did not run again")  # fmt: skip
    if not v.pip_log:
        return (f"the second setup still takes {second:.1f} s: "
                + ", ".join(f"{p} {_median(s.seconds, p):.1f} s" for p in s.seconds[0].phases))  # fmt: skip
    builds = _median(s.firsts, SDISTS)
    left = sorted(((p, _median(s.seconds, p)) for p in s.seconds[0].phases), key=lambda kv: -kv[1])
    return (
        f"the cache takes away the sdists' builds ({builds:.1f} s of the first setup, none in the second), but "
        f"the second setup's {second:.1f} s are pip's own work in every new copy, which no package cache "
        "saves: " + "; ".join(f"{p} {t:.1f} s" for p, t in left[:4] if t >= 0.05)
    )


def _notes(samples: dict[str, Samples], ratios: dict[str, float]) -> list[str]:
    pip = samples["pip"]
    first = statistics.median(x.setup_s for x in pip.firsts)
    builds = _median(pip.firsts, SDISTS)
    bootstrap = _median(pip.seconds, BOOTSTRAP)
    uv, pip_ratio = ratios["uv"], ratios["pip"]
    return [
        f"How far a package cache can go: in the first setup with pip the sdists' builds are {builds:.1f} s of "
        f"{first:.1f} s ({100 * builds / first:.0f} %); everything else is done again by every session whatever "
        "the cache holds: bootstrapping pip into a new virtualenv, pip's start-up, the project's own editable "
        "build (an isolated build environment with setuptools installed into it, then the build), unpacking every "
        "wheel into the venv and compiling its bytecode. A project with more sdists gains more, one with none "
        f"gains almost nothing. With uv the same project's second setup is {uv:.2f}x its first: uv resolves from "
        "its cache in milliseconds, copies the unpacked wheels from it into the venv (hard links fail: the cache "
        "and the copy are two mounts), writes no bytecode and makes the project's build environment from its "
        "cache; what is left is mostly the project's own editable build.",
        "With pip alone the package cache cannot reach the goal; the harness closes it by reusing an identical "
        "setup's result (the 'restored' rows): after a session's first setup passes, having changed no tracked "
        "file, its outputs (`.venv`, `*.egg-info`: `setup.outputs`) are kept in the per-user cache under a key of "
        "the image's id, the command, its network and its inputs' digest, and a new session with the same key gets "
        "them back (every copy is /workspace, so a virtualenv and an editable install are valid as they are) "
        f"instead of running the setup: {ratios['pip-restored']:.2f}x. The package-cache rows remove that "
        f"snapshot between the two sessions. uv in the image would help too: {uv:.2f}x against {pip_ratio:.2f}x for "
        f"pip with the package cache only; pip or ensurepip in harness-base would save only the bootstrap "
        f"({bootstrap:.1f} s of the second setup with pip): not enough on its own.",
        "Found on the way, and fixed: /tmp was mounted noexec in the harness's containers (Docker's tmpfs default, "
        "against what runner/sandbox/container.py meant), so an sdist whose build needs a compiled build dependency "
        "(PyYAML's, with Cython: `failed to map segment from shared object`) could not be built in a setup. /tmp "
        "now allows exec. pyyaml is still installed from its wheel here, and idna is the seventh sdist.",
        "The stand-in index is plain HTTP on loopback: pip keeps no HTTP cache for it (it caches only https "
        "origins and --trusted-host ones), so the second session fetches the wheels again, a few MB over loopback "
        "in milliseconds. From PyPI the first session would also spend the network's time on every download and "
        "the second would read them from the cache: the ratio measured here is the conservative one.",
    ]


if __name__ == "__main__":
    main(measure, __doc__)
