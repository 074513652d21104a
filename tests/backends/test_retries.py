"""Transient faults of the Kubernetes API are retried with the Docker backend's policy (runner/backends/retry.py),
against a stand-in API server on loopback that answers 503 before it answers; urllib3 retries nothing itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.engine import KubernetesBackend
from runner.base.errors import BackendError, EngineUnavailableError
from tests.kube_standin import StandIn, serving

ANSWERS = {
    "/version/": {
        "major": "1",
        "minor": "20",
        "gitVersion": "v1.20.2",
        "gitCommit": "0",
        "gitTreeState": "clean",
        "buildDate": "2021-01-13T00:00:00Z",
        "goVersion": "go1.15",
        "compiler": "gc",
        "platform": "linux/amd64",
    },
    "/api/v1/namespaces/ns": {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns"}},
    "/apis/node.k8s.io/v1/runtimeclasses": {"kind": "RuntimeClassList", "apiVersion": "node.k8s.io/v1", "items": []},
}


class Flaky(StandIn):
    """Answers 503 `failures_left` times, then what the engine's check asks."""

    failures_left = 0

    def answer(self, path: str) -> tuple[object, int]:
        if self.failures_left > 0:
            self.failures_left -= 1
            return {"kind": "Status", "code": 503, "message": "etcd is away"}, 503
        body = ANSWERS.get(path)
        return (body, 200) if body else ({}, 404)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Flaky, KubernetesConfig]]:
    with serving(Flaky(), tmp_path) as served:
        yield served


def test_transient_api_faults_are_retried_with_one_plain_line_each(
    api: tuple[Flaky, KubernetesConfig], caplog: pytest.LogCaptureFixture
) -> None:
    server, config = api
    server.failures_left = 2
    with caplog.at_level(logging.WARNING):
        info = KubernetesBackend(config).check()
    assert info.version == "v1.20.2"
    assert server.paths[:3] == ["/version/"] * 3  # two 503s, then the answer
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and all("Kubernetes API error 503" in line for line in retries), retries
    assert not [r for r in caplog.records if r.name.startswith("urllib3")], caplog.records


def test_a_lost_api_is_retried_a_bounded_number_of_times_by_us_alone(
    api: tuple[Flaky, KubernetesConfig], caplog: pytest.LogCaptureFixture
) -> None:
    server, config = api
    server.shutdown()
    server.server_close()  # nothing listens on the port any more: every connection is refused
    with caplog.at_level(logging.DEBUG), pytest.raises(EngineUnavailableError, match="lost the Kubernetes API"):
        KubernetesBackend(config).check()
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 4, retries  # five attempts in all
    # urllib3 would otherwise retry each attempt three times more, with a warning line each.
    said = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= logging.WARNING]
    assert not said, said


def test_a_create_whose_answer_was_lost_is_not_an_error(api: tuple[Flaky, KubernetesConfig]) -> None:
    _, config = api
    backend = KubernetesBackend(config)
    answers = [ApiException(status=502), ApiException(status=409)]  # made, but the answer was lost; then exists

    def create(name: str, **kwargs: object) -> None:
        raise answers.pop(0)

    backend._create("create a Job", create, "job-1")
    assert answers == []
    first = [ApiException(status=409)]  # a conflict on the first attempt: somebody else's object

    def conflict(name: str, **kwargs: object) -> None:
        raise first.pop(0)

    with pytest.raises(BackendError, match="409"):
        backend._create("create a Job", conflict, "job-1")
