"""An S3-compatible server on the loopback for tests and benchmarks: moto's `ThreadedMotoServer`, plus a request
log (to count the GETs a read makes) and a gate that holds uploads matching a pattern (to kill a build mid-upload).

    with S3Server() as s3:          # sets AWS_ENDPOINT_URL and fake keys in os.environ, restores them after
        s3.bucket("data")
        ...; s3.requests            # [(method, path, range header or ""), ...]

Needs the `s3` and `test` extras (s3fs, moto[server]).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

LOOPBACK = "127.0.0.1"
FAKE_SECRET = "mmdata-test-secret-Zq81xR"  # tests grep every output for it
ENV = {"AWS_ACCESS_KEY_ID": "mmdata-test-key", "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
       "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class _Logged:
    """WSGI middleware: records each request; holds a PUT whose path matches the gate until it is released."""

    def __init__(self, app: Callable[..., Iterable[bytes]], server: S3Server) -> None:
        self.app, self.server = app, server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        s = self.server
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        with s.lock:
            s.requests.append((method, path, environ.get("HTTP_RANGE", "")))
        gate = s.gate
        if gate is not None and method == "PUT" and gate.search(path):
            s.held.set()
            s.release.wait(120)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"held by the test and dropped"]  # the client was killed mid-upload: nothing is stored
        return self.app(environ, start_response)


def _serve_counting(port: int, gets: Any, ready: Any) -> None:
    """The server of `S3Server(process=True)`: moto in its own process, counting GETs into shared memory."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    moto.start()
    assert moto._server is not None
    app = moto._server.app

    def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            with gets.get_lock():
                gets.value += 1
        return app(environ, start_response)

    moto._server.app = counted
    ready.set()
    threading.Event().wait()  # until the parent terminates this process


def _forget_clients() -> None:
    """fsspec reuses a client per set of arguments, and the endpoint from the environment is not one of them: a
    client made for the previous server of this process would still call it."""
    import fsspec

    fsspec.get_filesystem_class("s3").clear_instance_cache()


class S3Server:
    """`process=True` runs the server in a child process (for benchmarks: the client's work and the server's do
    not share one interpreter lock); it then counts GETs only, and has no upload gate."""

    def __init__(self, process: bool = False) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.process: Any = None
        if process:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self.gets, ready = ctx.Value("q", 0), ctx.Event()
            self.process = ctx.Process(target=_serve_counting, args=(self.port, self.gets, ready), daemon=True)
            self._ready = ready
        self.moto = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.gate: re.Pattern[str] | None = None
        self.held, self.release = threading.Event(), threading.Event()
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> S3Server:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        if self.process is not None:
            self.process.start()
            assert self._ready.wait(60), "the S3 server process did not start"
        else:
            self.moto.start()
            server = self.moto._server  # the werkzeug server it started; ThreadedMotoServer has no public hook
            assert server is not None
            server.app = _Logged(server.app, self)
        for k, v in {**ENV, "AWS_ENDPOINT_URL": self.url}.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        _forget_clients()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release.set()
        if self.process is not None:
            self.process.terminate()
            self.process.join(30)
        else:
            self.moto.stop()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_clients()

    def bucket(self, name: str) -> str:
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
        return f"s3://{name}"

    def count(self, method: str = "GET", since: int = 0) -> int:
        if self.process is not None:
            assert method == "GET" and since == 0, "a server in its own process counts GETs only"
            return int(self.gets.value)
        with self.lock:
            return sum(1 for m, _, _ in self.requests[since:] if m == method)

    def hold_uploads(self, pattern: str) -> None:
        """Hold the next PUT whose path matches `pattern` (`held` is set when it arrives) and drop it on release."""
        self.held.clear()
        self.release.clear()
        self.gate = re.compile(pattern)

    def open_gate(self) -> None:
        self.gate = None
        self.release.set()

    def require_auth(self, on: bool) -> None:
        """Make the server check credentials (moto accepts any by default): every key is then unknown to it."""
        import urllib.request

        body = b"0" if on else b"inf"
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=body, method="POST",
                                                      headers={"Content-Type": "text/plain"}))
