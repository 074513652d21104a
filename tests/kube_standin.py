"""A stand-in Kubernetes API server on loopback for the engine's unit tests (retries, capacity): a subclass says
what each GET gets (`answer`), the paths asked are recorded, and `serving` points a kubeconfig at it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from runner.backends.kubernetes.config import KubernetesConfig


class StandIn(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []  # every GET's path, without its query

    def answer(self, path: str) -> tuple[object, int]:
        """The JSON body and status code a GET of `path` gets."""
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.paths.append(path)
        body, code = self.server.answer(path)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


S = TypeVar("S", bound=StandIn)


@contextlib.contextmanager
def serving(server: S, tmp_path: Path) -> Iterator[tuple[S, KubernetesConfig]]:
    """`server` answering, and the engine's configuration that reaches it (namespace `ns`)."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    try:
        yield server, KubernetesConfig(kubeconfig=str(kubeconfig), namespace="ns")
    finally:
        server.shutdown()
        server.server_close()  # a second time is harmless
