"""The setup phase (issue 17): a Python project whose `pyproject.toml` declares a `test` extra (pytest and
attrs), installed by `--setup` from a package index stand-in on the host's loopback, reached only through the
setup's own egress proxy; then `--check "python -m pytest -q"` in the agent's environment.

The wheels are fetched ahead by `make test-wheels` (pip download into build/test-wheels); the index is a
plain HTTP directory listing that pip reads with --find-links. Nothing leaves loopback.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.helpers import GitRepo, harness, run_args
from tests.upstreams import Reply, ScriptedUpstream

pytestmark = pytest.mark.docker

WHEELS = Path(__file__).resolve().parents[2] / "build" / "test-wheels"
KEY = "sk-ant-SETUP-must-not-see-4f1e2d3c"

PYPROJECT = """[build-system]
requires = ["setuptools>=70"]
build-backend = "setuptools.build_meta"

[project]
name = "calc"
version = "0.1.0"
dependencies = []

[project.optional-dependencies]
test = ["pytest>=8", "attrs"]

[tool.setuptools]
packages = ["calc"]
"""
TEST = """import attrs
from calc import add

def test_add():
    assert add(2, 3) == 5

def test_attrs_is_installed():
    assert attrs.define
"""
# The setup's own probes go first: what it could reach and what it holds, for the test to read back.
PROBE = r"""
import json, os, urllib.error, urllib.request
seen = {"env": sorted(os.environ), "key": any("SETUP-must-not-see" in v for v in os.environ.values()),
        "sockets": sorted(os.listdir("/harness-net")) if os.path.isdir("/harness-net") else []}
try:  # where the agent finds its gateway; here it would go through the setup's proxy, which refuses it
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8787/v1/models"), timeout=5)
    seen["gateway"] = "reached"
except urllib.error.HTTPError as exc:
    seen["gateway"] = exc.code
except Exception as exc:
    seen["gateway"] = type(exc).__name__
open("/tmp/setup-probe.json", "w").write(json.dumps(seen))
print("SETUP-PROBE " + json.dumps(seen), flush=True)
"""


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    """The wheels on host loopback, as a directory listing pip can read (--find-links)."""
    if not any(WHEELS.glob("pytest-*.whl")):
        pytest.fail(f"no wheels in {WHEELS}: run 'make test-wheels' (make test does)")
    handler = functools.partial(_Quiet, directory=str(WHEELS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        _Quiet.hits.append(self.path)


def _setup_command(index: str) -> str:
    pip = next(WHEELS.glob("pip-*.whl")).name
    find = f"--no-index --find-links {index}"
    return " && ".join([
        "python3 probe.py",
        "python3 -m venv --without-pip .venv",  # the image has no ensurepip: pip comes from the index
        f"python3 -c 'import urllib.request as u; u.urlretrieve(\"{index}{pip}\", \"/tmp/pip.whl\")'",
        f".venv/bin/python /tmp/pip.whl/pip install -q --ignore-installed {find} pip",
        f".venv/bin/pip install -q {find} -e '.[test]'",
    ])  # fmt: skip


@pytest.fixture
def project(repo: GitRepo) -> GitRepo:
    (repo.path / "pyproject.toml").write_text(PYPROJECT)
    (repo.path / "calc").mkdir()
    (repo.path / "calc/__init__.py").write_text("def add(a, b):\n    return a + b\n")
    (repo.path / "tests").mkdir()
    (repo.path / "tests/test_calc.py").write_text(TEST)
    (repo.path / "probe.py").write_text(PROBE)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a project with a test extra")
    return repo


def _agent(body: str) -> str:
    """An --agent-cmd that runs `body` (shell) then reports done."""
    done = json.dumps({"state": "done", "summary": "worked"})
    return f"{body} && printf '%s' '{done}' > \"$HARNESS_STATUS_FILE\""


def test_setup_installs_the_test_extra_and_the_check_runs_in_that_environment(project: GitRepo, index: str) -> None:
    port = index.rsplit(":", 1)[1].strip("/")
    with ScriptedUpstream(anthropic=[Reply(text="x")] * 4) as up:
        env = {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY, "SETUP_SECRET": KEY}
        r = harness(*run_args("setup", "--setup", _setup_command(index), "--setup-allow-host", f"127.0.0.1:{port}",
                              "--env", "SETUP_SECRET", "--check", "python -m pytest -q -p no:cacheprovider",
                              cmd=_agent("python -c 'import pytest, attrs' && echo agent-sees-the-venv"), iterations=1),
                    cwd=project.path, env=env, timeout=600)  # fmt: skip
        gateway_seen = list(up.requests)
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["status"] == "completed", summary
    setup = summary["setup"]
    assert setup["passed"] and setup["exitCode"] == 0 and setup["source"] == "flag" and setup["runs"] == 1
    assert ".venv" in setup["outputs"] and "calc.egg-info" in setup["outputs"]
    journal = project.journal("setup")
    log = (journal / "setup.log").read_text()
    probe = json.loads(log.split("SETUP-PROBE ", 1)[1].splitlines()[0])
    # No model gateway and no key in the setup: nothing listens on the gateway's port, and neither the key
    # nor an --env value is in its environment (the agent does get the --env value).
    assert probe["gateway"] == 403 and probe["sockets"] == ["egress.sock"] and not probe["key"]
    assert "SETUP_SECRET" not in probe["env"] and "ANTHROPIC_BASE_URL" not in probe["env"]
    assert not gateway_seen  # the agent called no model either: the scripted upstream saw nothing
    # The setup reached the index through its proxy (logged), and the agent's iteration ran on the venv.
    egress = [json.loads(line) for line in (journal / "setup-egress.log").read_text().splitlines()]
    assert {e["decision"] for e in egress if e["port"] == int(port)} == {"allowed"}
    assert [e["decision"] for e in egress if e["port"] == 8787] == ["refused"]
    assert "agent-sees-the-venv" in (journal / "iteration-0001.log").read_text()
    check = json.loads((journal / "iteration-0001.json").read_text())["check"]
    assert check["passed"] and "2 passed" in (journal / check["logFile"]).read_text()
    # The virtualenv is in the copy, never on the branch.
    files = project.git("ls-tree", "-r", "--name-only", "harness/setup").splitlines()
    assert files and not [f for f in files if f.startswith((".venv/", "calc.egg-info/"))]
    assert "tests/test_calc.py" in files


def test_a_failing_test_fails_the_check(project: GitRepo, index: str) -> None:
    port = index.rsplit(":", 1)[1].strip("/")
    breaking = "sed -i 's/a + b/a - b/' calc/__init__.py && git commit -qam 'break add'"
    r = harness(*run_args("broken", "--setup", _setup_command(index), "--setup-allow-host", f"127.0.0.1:{port}",
                          "--check", "python -m pytest -q -p no:cacheprovider", cmd=_agent(breaking), iterations=1),
                cwd=project.path, timeout=600)  # fmt: skip
    assert r.code != 0 or r.json()["status"] != "completed", r.stdout
    record = json.loads((project.journal("broken") / "iteration-0001.json").read_text())
    assert record["outcome"] == "check-failed" and not record["check"]["passed"]
    assert "1 failed, 1 passed" in (project.journal("broken") / record["check"]["logFile"]).read_text()


def test_a_setup_without_its_network_fails_and_resume_runs_it_again(project: GitRepo, index: str) -> None:
    port = index.rsplit(":", 1)[1].strip("/")
    r = harness(*run_args("nonet", "--setup", _setup_command(index), cmd=_agent("true"), iterations=1),
                cwd=project.path, timeout=600)  # fmt: skip
    summary = r.json()
    # No --setup-allow-host: the index is out of reach, the setup fails and the session says so.
    assert summary["status"] == "failed" and summary["stopReason"] == "setup-failed", summary
    assert summary["setup"]["passed"] is False and summary["iterationCount"] == 0
    status = harness("status", "--session", "nonet", cwd=project.path)
    assert "failed (exit " in status.stdout and "setup.log" in status.stdout, status.stdout
    report = harness("report", "--session", "nonet", "--format", "md", cwd=project.path)
    assert "setup" in report.stdout and "failed (exit " in report.stdout, report.stdout
    fixed = harness("resume", "--session", "nonet", "--setup-allow-host", f"127.0.0.1:{port}", "--json",
                    cwd=project.path, timeout=600)  # fmt: skip
    assert fixed.code == 0, fixed.stderr
    again = fixed.json()
    assert again["setup"]["passed"] and again["setup"]["runs"] == 2 and again["status"] == "completed"


def test_a_changed_lockfile_runs_the_setup_again_on_resume(project: GitRepo) -> None:
    # The agent adds a lockfile once (committed, so harvested onto the branch); the setup only counts.
    lock = ("[ -f requirements.txt ] || { echo attrs > requirements.txt && git add requirements.txt && "
            "git commit -qm 'pin attrs'; }")  # fmt: skip
    first = harness(*run_args("lock", "--setup", "echo SETUP-RAN", cmd=_agent(lock), iterations=1), cwd=project.path)
    assert first.json()["setup"]["runs"] == 1, first.stderr
    assert first.json()["status"] == "completed"
    # The branch's head now has a requirements.txt that the setup never saw: it runs again first.
    changed = harness("resume", "--session", "lock", "--max-iterations", "1", "--json", cwd=project.path)
    assert changed.code == 0, changed.stderr
    assert changed.json()["setup"]["runs"] == 2
    # Nothing changed since: the next resume goes straight to the agent.
    same = harness("resume", "--session", "lock", "--max-iterations", "1", "--json", cwd=project.path)
    assert same.json()["setup"]["runs"] == 2 and same.json()["iterationCount"] == 3
    assert (project.journal("lock") / "setup.log").read_text().count("SETUP-RAN") == 1  # the log is the last run's


def test_a_second_identical_setup_is_restored_from_the_cache(project: GitRepo, index: str) -> None:
    port = index.rsplit(":", 1)[1].strip("/")
    agent = _agent("python -m pytest -q -p no:cacheprovider")
    setup = ["--setup", _setup_command(index), "--setup-allow-host", f"127.0.0.1:{port}"]
    first = harness(*run_args("first", *setup, cmd=agent, iterations=1), cwd=project.path, timeout=600)
    assert first.code == 0 and first.json()["setup"]["restored"] is False, first.stderr
    served = len(_Quiet.hits)
    second = harness(*run_args("second", *setup, cmd=agent, iterations=1), cwd=project.path, timeout=600)
    assert second.code == 0 and second.json()["status"] == "completed", second.stderr
    setup = second.json()["setup"]
    # The same image, command, network and inputs: the outputs come back from the cache, nothing is fetched,
    # and the agent's tests run on them.
    assert setup["restored"] is True and setup["passed"] and ".venv" in setup["outputs"]
    assert len(_Quiet.hits) == served
    assert "2 passed" in (project.journal("second") / "iteration-0001.log").read_text()
    assert setup["durationSeconds"] < first.json()["setup"]["durationSeconds"]
    files = project.git("ls-tree", "-r", "--name-only", "harness/second").splitlines()
    assert not [f for f in files if f.startswith(".venv/")]


def test_the_setup_given_by_a_devcontainer_installs_the_test_extra(project: GitRepo, index: str) -> None:
    port = index.rsplit(":", 1)[1].strip("/")
    devcontainer = {
        "build": {"dockerfile": "Dockerfile"},  # built from the offline base, as every image here is
        "containerEnv": {"CALC_MODE": "devcontainer"},
        "postCreateCommand": _setup_command(index),
    }
    (project.path / ".devcontainer").mkdir()
    (project.path / ".devcontainer/devcontainer.json").write_text(json.dumps(devcontainer))
    (project.path / ".devcontainer/Dockerfile").write_text("FROM harness-base:latest\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "a devcontainer")
    plan = harness(*run_args("dc", "--dry-run", cmd="true"), cwd=project.path).json()["environment"]
    built = [plan["image"], *([plan["devcontainer_build"]["tag"]] if plan.get("devcontainer_build") else [])]
    r = harness(*run_args("dc", "--setup-allow-host", f"127.0.0.1:{port}", "--check",
                          "python -m pytest -q -p no:cacheprovider", cmd=_agent('test "$CALC_MODE" = devcontainer'),
                          iterations=1), cwd=project.path, timeout=600)  # fmt: skip
    subprocess.run(["docker", "rmi", "-f", *built], capture_output=True, check=False)  # made for this test
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    setup = r.json()["setup"]
    assert setup["source"] == "devcontainer" and setup["passed"] and ".venv" in setup["outputs"]
    check = json.loads((project.journal("dc") / "iteration-0001.json").read_text())["check"]
    assert check["passed"] and "2 passed" in (project.journal("dc") / check["logFile"]).read_text()
