"""Attack row 30: smuggle a request past the egress proxy, from inside a real container.

With `--network allowlist`, the agent talks raw HTTP/1.1 to the proxy's relay port (`HTTPS_PROXY`) over
Python sockets, as a hostile agent would: a bare CR or LF in the request target, a bare LF in a chunk-size
line, a bare CR in a chunk extension, NUL and DEL in a header value, Content-Length with
Transfer-Encoding, two Content-Lengths, a folded header. Each hides a second request (to a `/smuggled`
path) that an upstream reading the bytes another way than the proxy would serve. The upstream is a
stand-in on the host's loopback, listed with `--allow-host`, that records every byte it gets.

Positive control, in the same run over the same path: the plain requests (a GET, and a chunked POST with
a chunk extension) reach the stand-in, in the exact bytes the proxy writes for them.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading

import pytest

from tests.helpers import GitRepo, wait_for
from tests.security.conftest import run_agent

pytestmark = pytest.mark.docker

ROW30 = pytest.mark.attack(row=30, name="smuggle requests past the egress proxy (control characters, framing)")

# `{t}` is the stand-in's host:port. Every attack sends its hidden request to a path with 'smuggled' in it.
HIDDEN = "GET /smuggled HTTP/1.1\r\nHost: {t}\r\n\r\n"
CONTROLS = {
    "plain GET": "GET http://{t}/control HTTP/1.1\r\nHost: {t}\r\n\r\n",
    "chunked POST": "POST http://{t}/control HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n0\r\n\r\n",
}
ATTACKS = {
    "CR in the target": ("GET http://{t}/a\r" + HIDDEN, "a control character 0x0d in the request line"),
    "LF in the target": ("GET http://{t}/a\n" + HIDDEN, "a control character 0x0a in the request line"),
    "LF in a chunk size": (
        "POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n" + HIDDEN + "0\r\n\r\n",
        "a control character 0x0a in a chunk line",
    ),
    "CR in a chunk extension": (
        "POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding: chunked\r\n\r\n0;x\r\r\n\r\n" + HIDDEN,
        "a control character 0x0d in a chunk line",
    ),
    "NUL in a header value": (
        "GET http://{t}/c HTTP/1.1\r\nHost: {t}\r\nX-Note: a\x00b\r\n\r\n",
        "a control character 0x00 in the header line",
    ),
    "DEL in a header value": (
        "GET http://{t}/c HTTP/1.1\r\nHost: {t}\r\nX-Note: a\x7fb\r\n\r\n",
        "a control character 0x7f in the header line",
    ),
    "Content-Length and Transfer-Encoding": (
        "POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nContent-Length: 39\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n" + HIDDEN,
        "both Content-Length and Transfer-Encoding",
    ),
    "two Content-Lengths": (
        "POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nContent-Length: 0\r\nContent-Length: 34\r\n\r\n" + HIDDEN,
        "more than one Content-Length",
    ),
    "folded Transfer-Encoding": (
        "POST http://{t}/c HTTP/1.1\r\nHost: {t}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 34\r\n\r\n"
        + HIDDEN,
        "an obsolete folded header line",
    ),
}

PROBE = r"""
import json, os, socket, sys
host, port = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/").split(":")
cases = json.load(open("cases.json"))
out = {}
for name, text in cases.items():
    s = socket.create_connection((host, int(port)), timeout=60)
    data = b""
    try:
        s.sendall(text.replace("{t}", sys.argv[1]).encode("latin-1"))
        while chunk := s.recv(65536):
            data += chunk
    except OSError as exc:
        data += f"\r\n\r\n[{type(exc).__name__}]".encode()
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    out[name] = [head.split(b"\r\n")[0].decode("latin-1"), body.decode("latin-1")]
json.dump(out, open("smuggle.json", "w"))
json.dump({"state": "done", "summary": "smuggled"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


class _Recorder(socketserver.ThreadingTCPServer):
    """The upstream stand-in: answers 200 once a head is in, and records every byte of each connection."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Record)
        self.received: list[bytes] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Record(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(60)
        got = b""
        while b"\r\n\r\n" not in got and (data := sock.recv(65536)):
            got += data
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        sock.shutdown(socket.SHUT_WR)
        while data := sock.recv(65536):  # until the proxy closes: anything smuggled after shows up
            got += data
        assert isinstance(self.server, _Recorder)
        self.server.received.append(got)


@ROW30
def test_requests_cannot_be_smuggled_past_the_egress_proxy(repo: GitRepo, runtime: str) -> None:
    stand_in = _Recorder()
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{stand_in.port}"
    (repo.path / "smuggle.py").write_text(PROBE)
    cases = {**CONTROLS, **{name: text for name, (text, _) in ATTACKS.items()}}
    (repo.path / "cases.json").write_text(json.dumps(cases))
    repo.git("add", "smuggle.py", "cases.json")
    repo.git("commit", "-q", "-m", "smuggle")
    try:
        r = run_agent(repo, "smuggle", f"python3 smuggle.py {target}", runtime, "--network", "allowlist",
                      "--allow-host", target)  # fmt: skip
        assert r.json()["status"] == "completed", r.stderr
        # The stand-in records a connection when the proxy has closed it.
        wait_for(lambda: len(stand_in.received) >= len(CONTROLS), timeout=30, what="the controls at the stand-in")
    finally:
        stand_in.shutdown()
        stand_in.server_close()
    answers = json.loads(repo.git("show", "harness/smuggle:smuggle.json"))
    # The trap: the plain requests went through the relay and the proxy, and arrived as the proxy wrote them.
    assert answers["plain GET"] == ["HTTP/1.1 200 OK", "ok"] and answers["chunked POST"] == ["HTTP/1.1 200 OK", "ok"]
    assert sorted(stand_in.received) == sorted(
        [
            f"GET /control HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode(),
            f"POST /control HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n".encode(),
        ]
    )
    # Every attack got the proxy's refusal, and nothing of it reached the stand-in (checked above: only the
    # controls' bytes arrived, and no 'smuggled' anywhere).
    for name, (_, reason) in ATTACKS.items():
        status_line, body = answers[name]
        assert status_line == "HTTP/1.1 400 Bad Request", (name, answers[name])
        assert json.loads(body)["reason"].startswith(reason), (name, body)
    assert not any(b"smuggled" in got for got in stand_in.received)
    log = [json.loads(line) for line in (repo.journal("smuggle") / "egress.log").read_text().splitlines()]
    assert sorted((entry["decision"], entry["status"]) for entry in log) == sorted(
        [("allowed", 200)] * len(CONTROLS) + [("refused", 400)] * len(ATTACKS)
    )
    refused = {entry["reason"] for entry in log if entry["decision"] == "refused"}
    assert all(any(why.startswith(reason) for why in refused) for _, reason in ATTACKS.values())
