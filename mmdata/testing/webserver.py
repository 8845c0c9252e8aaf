"""A loopback HTTP server for tests and demos: fixed routes (body, status, content type, delay), anything else
404.

It binds 127.0.0.1 only, on a port the OS picks, serves from daemon threads, and shuts itself down after
`max_seconds` even if the caller forgets: a test that hangs never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Route:
    body: bytes
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0  # seconds before the response starts (a slow host)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow handler must never block shutdown
    request_queue_size = 128  # img2dataset opens many connections at once
    routes: Mapping[str, Route]
    stopping: threading.Event
    hits: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.server.hits += 1
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            route = Route(b"not found", status=404, content_type="text/plain")
        if route.delay and self.server.stopping.wait(route.delay):
            return
        try:
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Served:
    """A running server: `base` is `http://127.0.0.1:PORT`, `url(path)` the address of a route."""

    base: str
    server: _Server

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    @property
    def hits(self) -> int:
        return self.server.hits


@contextlib.contextmanager
def serve(routes: Mapping[str, Route], max_seconds: float = 900.0) -> Iterator[Served]:
    """Serve `routes` (path → Route) on 127.0.0.1 while inside the `with`; stopped on exit or after
    `max_seconds`."""
    server = _Server((LOOPBACK, 0), _Handler)
    server.routes, server.stopping, server.hits = dict(routes), threading.Event(), 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                              name="loopback-http")
    thread.start()
    deadline = time.monotonic() + max_seconds

    def watchdog() -> None:
        if not server.stopping.wait(max(0.0, deadline - time.monotonic())):
            server.stopping.set()
            server.shutdown()

    threading.Thread(target=watchdog, daemon=True, name="loopback-http-watchdog").start()
    try:
        yield Served(f"http://{LOOPBACK}:{server.server_address[1]}", server)
    finally:
        if not server.stopping.is_set():
            server.stopping.set()
            server.shutdown()
        server.server_close()
        thread.join(timeout=5)
