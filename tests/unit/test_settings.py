"""Where `run`'s options come from: command line, environment, repository file, user file, defaults."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from runner.backends import engine_tables
from runner.base.errors import UsageError
from runner.base.paths import data_home, sessions_root
from runner.base.seams import HarnessEnv
from runner.record.models import Limits
from runner.record.settings import RunOptions, env_var, resolve
from runner.sandbox.container import labels, session_labels
from runner.usecases.options import LimitOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture
def top(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


def user_file(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_layer_overrides_the_next(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = user_file('memory = "5g"\npids = 100\ncpus = 3\nmax_iterations = 7\n')
    (top / "harness.toml").write_text('memory = "4g"\npids = 200\ncpus = 2\n')
    monkeypatch.setenv("HARNESS_MEMORY", "3g")
    monkeypatch.setenv("HARNESS_PIDS", "300")

    r = resolve({"memory": "1g", "cpus": None}, repo_top=top)

    assert (r.settings.memory, r.sources["memory"]) == ("1g", "cli")
    assert (r.settings.pids, r.sources["pids"]) == (300, "env:HARNESS_PIDS")
    assert (r.settings.cpus, r.sources["cpus"]) == (2.0, f"file:{top / 'harness.toml'}")
    assert (r.settings.max_iterations, r.sources["max_iterations"]) == (7, f"user:{user}")
    assert (r.settings.stuck_after, r.sources["stuck_after"]) == (3, "default")


def test_the_environment_beats_the_files_when_the_command_line_is_silent(
    top: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (top / "harness.toml").write_text('memory = "4g"\n')
    monkeypatch.setenv("HARNESS_MEMORY", "3g")
    r = resolve({"memory": None}, repo_top=top)
    assert (r.settings.memory, r.sources["memory"]) == ("3g", "env:HARNESS_MEMORY")
    monkeypatch.setenv("HARNESS_MEMORY", "")  # empty is unset
    r = resolve({"memory": None}, repo_top=top)
    assert (r.settings.memory, r.sources["memory"]) == ("4g", f"file:{top / 'harness.toml'}")


def test_pyproject_tool_harness_is_the_repository_layer(top: Path) -> None:
    user_file("max_cost = 9.5\nstuck_after = 5\n")
    (top / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.harness]\nmax_cost = 2.5\n')
    r = resolve({}, repo_top=top)
    assert (r.settings.max_cost, r.sources["max_cost"]) == (2.5, f"file:{top / 'pyproject.toml'}")
    assert r.settings.stuck_after == 5 and r.sources["stuck_after"].startswith("user:")


def test_a_pyproject_without_the_table_is_no_layer(top: Path) -> None:
    (top / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.ruff]\nline-length = 1\n')
    r = resolve({}, repo_top=top)
    assert set(r.sources.values()) == {"default"}
    assert r.settings == RunOptions()


def test_both_repository_files_are_refused(top: Path) -> None:
    (top / "pyproject.toml").write_text("[tool.harness]\npids = 64\n")
    (top / "harness.toml").write_text("pids = 64\n")
    with pytest.raises(UsageError, match=r"harness.toml.*pyproject.toml"):
        resolve({}, repo_top=top)


def test_agent_and_agent_cmd_come_from_one_layer(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_file('agent_cmd = "make night"\n')
    r = resolve({"agent": "demo"}, repo_top=top)
    assert (r.settings.agent, r.settings.agent_cmd) == ("demo", None)
    assert r.sources["agent_cmd"] == "default"
    monkeypatch.setenv("HARNESS_AGENT_CMD", "./night.sh")
    r = resolve({}, repo_top=top)
    assert (r.settings.agent, r.settings.agent_cmd) == (None, "./night.sh")


def test_lists_from_the_environment(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_NETWORK", "allowlist")
    monkeypatch.setenv("HARNESS_ALLOW_HOSTS", "api.example.com, pypi.org:443")
    monkeypatch.setenv("HARNESS_ENV", '["GH_TOKEN"]')
    r = resolve({}, repo_top=top)
    assert r.settings.allow_hosts == ("api.example.com", "pypi.org:443") and r.settings.env == ("GH_TOKEN",)
    assert r.sources["allow_hosts"] == "env:HARNESS_ALLOW_HOSTS"


def test_numbers_in_toml_are_sizes_and_durations(top: Path) -> None:
    (top / "harness.toml").write_text("memory = 1073741824\niteration_timeout = 600\n")
    s = resolve({}, repo_top=top).settings
    assert LimitOptions(memory=s.memory, iteration_timeout=s.iteration_timeout).apply(Limits()).memory_bytes == 1024**3
    assert s.iteration_timeout == "600"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('memroy = "1g"\n', "unknown key 'memroy'"),
        ('memory = "lots"\n', "key 'memory': 'lots' is not a positive size"),
        ("pids = 3\n", "key 'pids': Input should be greater than or equal to 16"),
        ('iteration_timeout = "soon"\n', "key 'iteration_timeout': 'soon' is not a positive duration"),
        ("max_cost = nan\n", "key 'max_cost'"),
        ('home = "/tmp/x"\n', "unknown key 'home' (set HARNESS_HOME in the environment)"),
        ("cpus = [\n", "not valid TOML"),
    ],
)
def test_a_bad_user_file_names_the_file_and_key(top: Path, text: str, fragment: str) -> None:
    path = user_file(text)
    with pytest.raises(UsageError) as info:
        resolve({}, repo_top=top)
    message = info.value.message
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def test_a_bad_repository_value_names_the_file_and_key(top: Path) -> None:
    (top / "pyproject.toml").write_text('[tool.harness]\nnetwork = "host"\n')
    with pytest.raises(UsageError) as info:
        resolve({}, repo_top=top)
    assert info.value.message.startswith(f"{top / 'pyproject.toml'}: key 'network'")


@pytest.mark.parametrize("key", ["env", "network", "allow_hosts", "runtime"])
def test_a_repository_may_not_widen_the_sandbox(top: Path, key: str) -> None:
    value = {"env": '["GH_TOKEN"]', "allow_hosts": '["example.com"]', "network": '"none"', "runtime": '"runc"'}[key]
    (top / "harness.toml").write_text(f"{key} = {value}\n")
    with pytest.raises(UsageError, match=f"harness.toml: key '{key}' may not be set by a repository"):
        resolve({}, repo_top=top)
    # The user's own file may set it (positive control).
    (top / "harness.toml").unlink()
    user_file(f"{key} = {value}\n")
    assert resolve({}, repo_top=top).sources[key].startswith("user:")


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("HARNESS_MEMORY", "lots", "HARNESS_MEMORY: 'lots' is not a positive size"),
        ("HARNESS_MAX_ITERATIONS", "many", "HARNESS_MAX_ITERATIONS: Input should be a valid integer"),
        ("HARNESS_RUNTIME", "kata", "HARNESS_RUNTIME: 'kata' is not one of runc, runsc"),
    ],
)
def test_a_bad_environment_value_names_the_variable(
    top: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError) as info:
        resolve({}, repo_top=top)
    assert info.value.message.startswith(fragment), info.value.message


def test_a_bad_command_line_value_names_the_option(top: Path) -> None:
    with pytest.raises(UsageError, match=r"^--network: 'host' is not one of none, allowlist .*not offered"):
        resolve({"network": "host"}, repo_top=top)


def test_the_defaults_are_the_limits_defaults() -> None:
    s = RunOptions()
    limits = LimitOptions(
        cpus=s.cpus, memory=s.memory, pids=s.pids, iteration_timeout=s.iteration_timeout, max_time=s.max_time,
        max_disk=s.max_disk, stuck_after=s.stuck_after, backoff_base=s.backoff_base, max_cost=s.max_cost,
    ).apply(Limits())  # fmt: skip
    assert limits == Limits().model_copy(update={"max_iterations": s.max_iterations})


def test_the_seams_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_JOURNAL_ROOT", str(tmp_path / "journals"))
    monkeypatch.setenv("HARNESS_CONTAINER_LABELS", "team=night,bad,cost=42")
    assert data_home() == tmp_path / "home"
    assert sessions_root(tmp_path) == tmp_path / "journals"
    got = labels("s", "k", "agent")
    assert got["team"] == "night" and got["cost"] == "42" and "bad" not in got
    # What finds the session's containers (resume and discard reap, hud samples) is part of every label set.
    assert session_labels("s", "k", "agent").items() <= got.items() and "team" not in session_labels("s", "k")
    monkeypatch.setenv("HARNESS_HOME", "")  # empty: the default, as before
    assert data_home() != tmp_path / "home"


def test_every_setting_is_described_and_documented() -> None:
    doc = DOCS.read_text()
    for name, info in RunOptions.model_fields.items():
        assert info.description, name
        assert f"`{name}`" in doc and f"`{env_var(name)}`" in doc, name
    for seam in fields(HarnessEnv):
        assert seam.metadata["description"], seam.name
        assert f"`{env_var(seam.name)}`" in doc, seam.name


def test_an_engines_options_come_from_its_table_or_its_flat_options(top: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = user_file('backend = "kubernetes"\n[kubernetes]\nnamespace = "agents"\ncontext = "lab"\n')
    monkeypatch.setenv("HARNESS_KUBERNETES__PENDING_TIMEOUT", "2m")
    monkeypatch.setenv("HARNESS_KUBE_CONTEXT", "night")  # a flat option, as before there were tables
    r = resolve({"kube_namespace": None, "kubeconfig": "/k"}, repo_top=top, engines=engine_tables())
    assert r.engine() == {
        "type": "kubernetes", "namespace": "agents", "context": "night", "pending_timeout": "2m", "kubeconfig": "/k"
    }  # fmt: skip
    assert r.sources["kubernetes.namespace"] == f"user:{user}"
    assert r.sources["kubernetes.context"] == "env:HARNESS_KUBE_CONTEXT"
    assert r.sources["kubernetes.pending_timeout"] == "env:HARNESS_KUBERNETES__PENDING_TIMEOUT"
    assert (r.sources["kubernetes.kubeconfig"], r.sources["kubernetes.image_pull_policy"]) == ("cli", "default")


def test_a_repository_may_not_send_its_agent_to_another_cluster(top: Path) -> None:
    (top / "harness.toml").write_text('[kubernetes]\nnamespace = "theirs"\n')
    with pytest.raises(UsageError, match=r"harness.toml: key 'kubernetes.namespace' may not be set by a repository"):
        resolve({}, repo_top=top, engines=engine_tables())
    (top / "harness.toml").write_text('kube_namespace = "theirs"\n')  # the flat option: refused as before
    with pytest.raises(
        UsageError, match=r"key 'kube_namespace' may not be set .* on the command line, in HARNESS_KUBE"
    ):
        resolve({}, repo_top=top, engines=engine_tables())
    (top / "harness.toml").write_text('[kubernetes]\nimage_pull_policy = "Never"\n')  # what a repository may set
    chosen = resolve({"backend": "kubernetes"}, repo_top=top, engines=engine_tables())
    assert chosen.engines == {"kubernetes": {"image_pull_policy": "Never"}}


@pytest.mark.parametrize(
    ("cli", "variable", "text", "fragment"),
    [
        ({}, None, '[kubernetes]\nnamespce = "x"\n', "config.toml: unknown key 'kubernetes.namespce'"),
        ({}, ("HARNESS_KUBE_PENDING_TIMEOUT", "soon"), "", "HARNESS_KUBE_PENDING_TIMEOUT: 'soon' is not a positive"),
        ({"kube_image_pull_policy": "Sometimes"}, None, "", "--kube-image-pull-policy: Input should be 'IfNotPresent'"),
        ({"backend": "podman"}, None, "", "--backend: 'podman' is not one of docker, kubernetes"),
        ({"kube_namespace": "agents"}, None, "", "--kube-namespace needs --backend kubernetes"),
        ({}, None, '[kubernetes]\ncontext = "lab"\n', "kubernetes.context needs --backend kubernetes"),
    ],
)
def test_bad_engine_options_say_where_they_are(
    top: Path, monkeypatch: pytest.MonkeyPatch, cli: dict[str, str], variable: tuple[str, str] | None, text: str,
    fragment: str,
) -> None:  # fmt: skip
    if variable is not None:
        monkeypatch.setenv(*variable)
    if text:
        user_file(text)
    with pytest.raises(UsageError) as info:
        resolve(cli, repo_top=top, engines=engine_tables())
    assert fragment in info.value.message and "\n" not in info.value.message, info.value.message


def test_an_engines_default_given_without_choosing_it_is_no_mistake(top: Path) -> None:
    given = resolve({"kube_namespace": "default"}, repo_top=top, engines=engine_tables())
    assert given.engine() == {"type": "docker"}


def test_every_engine_option_is_described_and_documented() -> None:
    doc = DOCS.read_text()
    for engine in engine_tables():
        for key in engine.options():
            assert engine.model.model_fields[key].description, (engine.name, key)
            name = f"{engine.name}.{key}"
            assert f"`{name}`" in doc and f"`{env_var(name)}`" in doc, name
        for flat in engine.flat:
            assert f"`{flat}`" in doc and f"`{env_var(flat)}`" in doc, flat
