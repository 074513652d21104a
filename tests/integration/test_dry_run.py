"""`run --dry-run`: creates nothing, prints the plan, and fails clearly with a distinct exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.base.errors import ExitCode
from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker

RUN = run_args("nightly", "--worktree", agent="demo", objective="write tests", as_json=False)


def test_dry_run_prints_the_plan_and_creates_nothing(repo: GitRepo, harness_home: Path) -> None:
    refs_before = repo.git("for-each-ref")
    r = harness(
        *RUN,
        "--memory",
        "1g",
        "--cpus",
        "1.5",
        "--pids",
        "100",
        "--iteration-timeout",
        "10m",
        "--max-time",
        "8h",
        "--max-iterations",
        "20",
        "--dry-run",
        "--json",
        cwd=repo.path,
    )
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["image"] == "harness-base:latest" and plan["imageState"] == "present"
    assert plan["branch"] == "harness/nightly" and plan["network"] == "none" and plan["user"] == "10001:10001"
    assert plan["baseCommit"] == repo.git("rev-parse", "HEAD")
    assert plan["limits"]["memoryBytes"] == 1024**3 and plan["limits"]["cpus"] == 1.5
    assert plan["limits"]["pids"] == 100 and plan["limits"]["iterationTimeoutSeconds"] == 600
    assert plan["limits"]["maxTimeSeconds"] == 8 * 3600 and plan["limits"]["maxIterations"] == 20
    assert {m["target"]: m["readOnly"] for m in plan["mounts"]} == {
        "/workspace": False,
        "/harness": True,
        "/harness-out": False,
    }
    assert plan["network"] == "none" and plan["gateway"]["inContainer"] == "http://127.0.0.1:8787"
    assert plan["hardening"]["dropCapabilities"] == ["ALL"] and plan["hardening"]["readOnlyRoot"] is True
    # What the Docker backend would submit, made by the code a real run uses.
    submitted = plan["submission"]
    assert submitted["cap_drop"] == ["ALL"] and submitted["read_only"] is True and submitted["network_mode"] == "none"
    assert submitted["user"] == "10001:10001" and submitted["mem_limit"] == 1024**3 and submitted["pids_limit"] == 100
    # The gateway's socket: the agent connects, never writes.
    assert {m["target"]: m["readOnly"] for m in submitted["mounts"]} == {
        **{m["target"]: m["readOnly"] for m in plan["mounts"]},
        "/harness-net": True,
    }
    assert submitted["command"][0] == "harness-relay" and submitted["command"][-1] == "harness-demo-agent"
    assert not (repo.path / "memory").exists()
    assert list(harness_home.iterdir()) == []
    assert repo.git("for-each-ref") == refs_before


def _fails(r, code: ExitCode, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == code, (r.code, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_path_that_is_not_a_repository(tmp_path: Path) -> None:
    _fails(harness(*RUN, "--dry-run", "--json", cwd=tmp_path), ExitCode.NOT_A_REPOSITORY, "not a git repository")


def test_an_existing_session(repo: GitRepo) -> None:
    first = harness(*RUN, "--json", cwd=repo.path)
    assert first.code == 0, first.stderr
    _fails(harness(*RUN, "--dry-run", cwd=repo.path), ExitCode.SESSION_EXISTS, "already exists")
    _fails(harness(*RUN, cwd=repo.path), ExitCode.SESSION_EXISTS, "already exists")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--memory", "lots"),
        ("--iteration-timeout", "soon"),
        ("--max-time", "-1h"),
        ("--cpus", "0"),
        ("--pids", "3"),
        ("--max-iterations", "0"),
    ],
)
def test_a_malformed_limit(repo: GitRepo, option: str, value: str) -> None:
    _fails(harness(*RUN, option, value, "--dry-run", cwd=repo.path), ExitCode.USAGE, "")


@pytest.mark.parametrize("name", ["../x", "/etc", "-rf", "a b"])
def test_a_bad_session_name(repo: GitRepo, name: str) -> None:
    r = harness("run", "--objective", "x", f"--session={name}", "--dry-run", cwd=repo.path)
    _fails(r, ExitCode.USAGE, "invalid session name")


def test_a_missing_image_that_cannot_be_built(repo: GitRepo) -> None:
    r = harness(*RUN, "--image", "harness-test-no-such-image:1", "--dry-run", cwd=repo.path)
    _fails(r, ExitCode.IMAGE_MISSING, "harness-test-no-such-image:1")


def test_an_unreachable_docker_engine(repo: GitRepo, tmp_path: Path) -> None:
    r = harness(*RUN, "--dry-run", cwd=repo.path, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    _fails(r, ExitCode.ENGINE_UNAVAILABLE, "Docker engine")


def test_a_base_that_names_no_commit(repo: GitRepo) -> None:
    _fails(harness(*RUN, "--base", "no-such-branch", "--dry-run", cwd=repo.path), ExitCode.USAGE, "--base")


def test_objective_options_are_exclusive(repo: GitRepo, tmp_path: Path) -> None:
    (tmp_path / "obj.md").write_text("from a file")
    r = harness(*run_args("s", "--objective-file", str(tmp_path / "obj.md"), "--dry-run", as_json=False), cwd=repo.path)
    _fails(r, ExitCode.USAGE, "exactly one")
    ok = harness(*run_args("s", "--objective-file", str(tmp_path / "obj.md"), "--dry-run", objective=None),
                 cwd=repo.path)  # fmt: skip
    assert ok.code == 0 and ok.json()["objective"] == "from a file"


def test_the_base_image_trusts_the_hosts_extra_ca_certificates() -> None:
    import subprocess

    from runner.base.trust import extra_ca_files

    certs = extra_ca_files()
    if not certs:
        pytest.skip("this host has no extra CA certificates (/usr/local/share/ca-certificates)")
    bundle = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "harness-base:latest",
            "cat",
            "/etc/ssl/certs/ca-certificates.crt",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for cert in certs:  # `make images` built it with `harness images build`, which adds them
        body = "".join(line for line in cert.read_text().splitlines() if not line.startswith("-----"))
        assert body[:200] in bundle.replace("\n", ""), cert


NO_CREDENTIALS = {
    "ANTHROPIC_API_KEY": "",
    "ANTHROPIC_AUTH_TOKEN": "",
    "CLAUDE_CODE_OAUTH_TOKEN": "",
    "OPENAI_API_KEY": "",
}


def test_an_agent_without_a_credential_on_the_host_does_not_start(repo: GitRepo, harness_home: Path) -> None:
    args = run_args("nokey", agent="claude-code")
    r = harness(*args, cwd=repo.path, env=NO_CREDENTIALS)
    assert r.code == ExitCode.USAGE and r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "ANTHROPIC_API_KEY" in line and "CLAUDE_CODE_OAUTH_TOKEN" in line and "claude setup-token" in line
    assert not repo.journal("nokey").exists() and "harness/nokey" not in repo.git("branch", "--list")
    # Control: the same command with a subscription token plans; the plan names the credential, never its value.
    token = "sk-ant-oat01-dry-run-token-9f8e7d"
    planned = harness(*args, "--dry-run", cwd=repo.path, env={**NO_CREDENTIALS, "CLAUDE_CODE_OAUTH_TOKEN": token})
    assert planned.code == 0, planned.stderr
    plan = planned.json()
    assert plan["gateway"]["credentials"] == {"anthropic": "subscription token (CLAUDE_CODE_OAUTH_TOKEN)"}
    assert token not in planned.stdout + planned.stderr
    assert "CLAUDE_CODE_OAUTH_TOKEN" in plan["submission"]["environment"]
    assert "ANTHROPIC_API_KEY" not in plan["submission"]["environment"]


def test_aider_without_a_model_follows_an_openai_key_alone(repo: GitRepo, harness_home: Path) -> None:
    args = run_args("ai", "--dry-run", agent="aider")
    r = harness(*args, cwd=repo.path, env={**NO_CREDENTIALS, "OPENAI_API_KEY": "sk-proj-dry-run"})
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["agent"]["model"] == "gpt-4o" and "openai/gpt-4o" in plan["agent"]["command"]
    assert plan["gateway"]["credentials"] == {"openai": "API key (OPENAI_API_KEY)"}


def test_auth_subscription_picks_the_token_over_a_key_and_a_bad_value_is_one_line(
    repo: GitRepo, harness_home: Path
) -> None:
    args = run_args("both", "--dry-run", agent="claude-code")
    env = {**NO_CREDENTIALS, "ANTHROPIC_API_KEY": "sk-ant-api-key-dry", "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-dry"}
    default = harness(*args, cwd=repo.path, env=env).json()
    assert default["gateway"]["credentials"] == {"anthropic": "API key (ANTHROPIC_API_KEY)"}
    chosen = harness(*args, "--auth", "subscription", cwd=repo.path, env=env).json()
    assert chosen["gateway"]["credentials"] == {"anthropic": "subscription token (CLAUDE_CODE_OAUTH_TOKEN)"}
    assert chosen["auth"] == "subscription" and "CLAUDE_CODE_OAUTH_TOKEN" in chosen["submission"]["environment"]
    keyless = harness(*args, "--auth", "subscription", cwd=repo.path,
                      env={**NO_CREDENTIALS, "ANTHROPIC_API_KEY": "sk-ant-api-key-dry"})  # fmt: skip
    assert keyless.code == ExitCode.USAGE and "CLAUDE_CODE_OAUTH_TOKEN" in keyless.stderr  # the key is not used
    bad = harness(*args, "--auth", "password", cwd=repo.path, env=env)
    assert bad.code == ExitCode.USAGE and bad.stderr.count("\n") == 1 and "auth" in bad.stderr


def test_the_plan_shows_the_protected_paths_and_where_they_come_from(repo: GitRepo) -> None:
    (repo.path / "tests").mkdir()
    (repo.path / "tests/test_app.py").write_text("def test_app():\n    pass\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a test")
    r = harness(*RUN, "--check", "pytest -q tests", "--dry-run", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["protectSource"] == "default" and plan["protect"][:1] == ["tests"], plan["protect"]
    assert "**/conftest.py" in plan["protect"] and "**/test_*.py" in plan["protect"]
    r = harness(*RUN, "--check", "pytest", "--protect", "tests/unit", "--protect", "**/conftest.py", "--dry-run",
                "--json", cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    assert (r.json()["protect"], r.json()["protectSource"]) == (["tests/unit", "**/conftest.py"], "flag")
    r = harness(*RUN, "--check", "pytest", "--no-protect", "--dry-run", "--json", cwd=repo.path)
    assert (r.json()["protect"], r.json()["protectSource"]) == ([], "off")
    (repo.path / "harness.toml").write_text('protect = ["tests"]\n')
    r = harness(*RUN, "--check", "pytest", "--dry-run", "--json", cwd=repo.path)
    assert (r.json()["protect"], r.json()["protectSource"]) == (["tests"], "config")
    r = harness(*RUN, "--dry-run", "--json", cwd=repo.path)  # no check: nothing to protect
    assert (r.json()["protect"], r.json()["protectSource"]) == ([], None)
    (repo.path / "harness.toml").write_text('protect = ["../up"]\n')
    r = harness(*RUN, "--check", "pytest", "--dry-run", "--json", cwd=repo.path)
    assert r.code == ExitCode.USAGE and "key 'protect'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
