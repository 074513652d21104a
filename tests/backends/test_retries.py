"""Transient faults of the Kubernetes API are retried with the Docker backend's policy (runner/backends/retry.py),
against a stand-in API server on loopback that answers 503 before it answers; urllib3 retries nothing itself."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from runner.backends.kubernetes.config import KubernetesConfig
from runner.backends.kubernetes.engine import KubernetesBackend
from runner.base.errors import BackendError, EngineUnavailableError

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


class StandIn(ThreadingHTTPServer):
    failures_left = 0
    paths: list[str]


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body, code = ANSWERS.get(self.path.split("?")[0]), 200
        if self.server.failures_left > 0:
            self.server.failures_left -= 1
            body, code = {"kind": "Status", "code": 503, "message": "etcd is away"}, 503
        data = json.dumps(body or {}).encode()
        self.send_response(code if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[StandIn, KubernetesConfig]]:
    server = StandIn(("127.0.0.1", 0), Handler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    yield server, KubernetesConfig(kubeconfig=str(kubeconfig), namespace="ns")
    server.shutdown()
    server.server_close()  # a second time is harmless


def test_transient_api_faults_are_retried_with_one_plain_line_each(
    api: tuple[StandIn, KubernetesConfig], caplog: pytest.LogCaptureFixture
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
    api: tuple[StandIn, KubernetesConfig], caplog: pytest.LogCaptureFixture
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


def test_a_create_whose_answer_was_lost_is_not_an_error(api: tuple[StandIn, KubernetesConfig]) -> None:
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
