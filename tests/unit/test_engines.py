"""The engines' registry (runner.backends): each engine found by its type, its SDK imported only when it is opened,
its configuration validated by the engine itself, and journals written before the registry read as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.backends import engine_config, engine_ref, open_engine
from runner.backends.docker.config import DockerConfig
from runner.backends.kubernetes.config import KubernetesConfig
from runner.base.errors import UsageError
from runner.record.journal import load_model
from runner.record.models import EngineRef, RunOwner, RunSummary

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "journal-v1"  # written by the harness before the registry
LAB = KubernetesConfig(
    kubeconfig="/home/u/.kube/lab", context="lab", namespace="agents", pending_timeout=90, image_pull_policy="Never"
)


def test_a_journal_written_before_the_registry_opens_the_engine_it_names(tmp_path: Path) -> None:
    summary = load_model(OLD / "run-summary.json", RunSummary)
    owner = load_model(OLD / "owner.json", RunOwner)
    assert engine_config(summary.backend) == engine_config(owner.backend) == LAB
    engine = open_engine(summary.backend)  # reaches nothing: a Kubernetes engine of that configuration
    assert engine.name == "kubernetes" and engine.config == LAB  # type: ignore[attr-defined]
    # Written again, the reference is what it was: the journal's shape did not change.
    written = json.loads(summary.dump_json())["backend"]
    assert written == json.loads((OLD / "run-summary.json").read_text())["backend"]
    assert engine_ref(LAB).model_dump(by_alias=True) == written
    docker = load_model(OLD / "run-summary-docker.json", RunSummary)
    assert engine_config(docker.backend) == DockerConfig() and open_engine(docker.backend).name == "docker"
    # A summary from before there were engines to choose names none: the local one.
    older = json.loads((OLD / "run-summary-docker.json").read_text())
    del older["backend"]
    (tmp_path / "run-summary.json").write_text(json.dumps(older))
    assert engine_config(load_model(tmp_path / "run-summary.json", RunSummary).backend) == DockerConfig()


def test_an_unknown_engine_or_field_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match=r"^no engine 'podman' \(known: docker, kubernetes\)$"):
        engine_config(EngineRef(type="podman"))
    with pytest.raises(UsageError, match=r"^the kubernetes engine's configuration: namespce: Extra inputs"):
        engine_config({"type": "kubernetes", "namespce": "agents"})
    with pytest.raises(UsageError, match=r"pendingTimeoutSeconds: .*'soon' is not a positive duration"):
        engine_config({"type": "kubernetes", "pendingTimeoutSeconds": "soon"})
    assert engine_config({"type": "kubernetes", "pending_timeout": "2m"}).pending_timeout == 120  # type: ignore[attr-defined]
    assert engine_config() == DockerConfig()


def test_an_engines_sdk_is_imported_when_that_engine_is_opened_and_no_other() -> None:
    code = (
        "import sys; from runner.backends import engine_config, engine_tables, open_engine;"
        "sdks = lambda: sorted(m for m in ('docker', 'kubernetes') if m in sys.modules);"
        "engine_tables(); engine_config({'type': 'kubernetes'}); print(sdks());"
        "open_engine(engine_config({'type': 'kubernetes'})); print(sdks())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "['kubernetes']"]
