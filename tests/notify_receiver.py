"""A webhook receiver on loopback for the notification tests: answers each POST with the next scripted status
(the last one repeats) and records what it got. With `hold=True` it is a slow receiver: it takes each POST and
holds it, its answer's status line sent and then a header a second (so that the sender's socket timeout never
ends the request), until `let_go()`. With `stall=True` its first connection is taken and never read: its sender has
connected and waits for an answer (the send is in progress; `stalled` is set) until `let_go()`, when that connection
is closed unread and unanswered (nothing arrived)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """`with Receiver(500, 500, 200) as r:` r.url is http://127.0.0.1:PORT; r.received lists the POSTs."""

    HOLD_SECONDS = 300.0  # the most a held request is held, let go or not

    def __init__(self, *statuses: int, location: str | None = None, hold: bool = False, stall: bool = False) -> None:
        self.statuses = list(statuses or (200,))
        self.location = location  # sent as Location (with a 3xx: a redirect)
        self.received: list[Received] = []
        self.stalled = threading.Event()  # `stall`: the first connection is taken
        self._stall = stall
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._unstall = threading.Event()
        if not hold:
            self._gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    first, outer._stall = outer._stall, False
                if first:
                    outer.stalled.set()
                    outer._unstall.wait(outer.HOLD_SECONDS)
                    return  # closed without reading the request
                super().handle()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                if not outer._gate.is_set():
                    self._hold(status)
                    return
                self.send_response(status)
                if outer.location is not None:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def _hold(self, status: int) -> None:
                """Answer only once let go: the status line now, then a header every 2 s (http.client takes
                100 headers, about 200 s, and its socket timeout never passes), then the rest."""
                deadline = time.monotonic() + outer.HOLD_SECONDS
                self.close_connection = True
                try:
                    self.wfile.write(f"HTTP/1.1 {status} Held\r\n".encode())
                    while not outer._gate.wait(2.0) and time.monotonic() < deadline:
                        self.wfile.write(b"X-Still-Holding: 1\r\n")
                    self.wfile.write(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
                except OSError:
                    pass  # the sender gave up: nothing to answer

            do_GET = do_POST  # a redirect that urllib followed arrives as a GET: recorded too

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.let_go()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def let_go(self) -> None:
        """Answer the requests held (hold=True), and every later one at once; close a stalled connection."""
        self._gate.set()
        self._unstall.set()
