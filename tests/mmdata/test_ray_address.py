"""A wrong `--ray-address` fails within seconds with one message naming it and the fix; `ray.init` alone would
retry the connection for minutes. No cluster is started: the addresses are a closed port and a server that is not
a Ray GCS, both on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray._private.ray_constants as ray_constants
from typer.testing import CliRunner

from mmdata.build.executors.base import ExecutorError
from mmdata.build.executors.ray import RayExecutor
from mmdata.cli import app
from mmdata.testing.llava import World

runner = CliRunner()


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray dials a 127.0.0.1 address at this machine's outward IP unless multi-node clusters are off; keep it on
    # the loopback our test servers bind.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (no one else can take it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def _http_server() -> Iterator[tuple[int, list[bytes]]]:
    """A port where an HTTP/1 server answers (what a dashboard address passed by mistake looks like)."""
    seen: list[bytes] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.settimeout(30)

        def serve() -> None:
            with contextlib.suppress(OSError), s.accept()[0] as conn:
                seen.append(conn.recv(64))
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield s.getsockname()[1], seen
    thread.join(5)


def test_a_closed_port_fails_the_build_in_seconds_with_one_line(llava_world: World, tmp_path: Path) -> None:
    with _closed_port() as port:
        start = time.monotonic()
        result = runner.invoke(app, ["build", "cambrian", "--input", str(llava_world.jsonl), "--media-root",
                                     str(llava_world.media_root), "--out", str(tmp_path / "out"), "-q",
                                     "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"])
        took = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert took < 20, took
    assert f"error: --ray-address 127.0.0.1:{port}: no Ray cluster answers there" in result.output
    assert "ray start --head" in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "out").rglob("*.jsonl"))  # failed before any work


def test_a_server_that_is_not_a_ray_gcs_fails_in_seconds() -> None:
    with _http_server() as (port, seen):
        start = time.monotonic()
        with pytest.raises(ExecutorError, match=rf"--ray-address 127.0.0.1:{port}: no Ray cluster answers there"
                                                r".*not the dashboard's 8265"):
            with RayExecutor(f"127.0.0.1:{port}"):
                pass
        assert time.monotonic() - start < 20
    assert seen and seen[0].startswith(b"PRI * HTTP/2.0")  # the probe reached the server and spoke gRPC to it


def test_an_address_that_is_not_host_port_is_named() -> None:
    with pytest.raises(ExecutorError, match="--ray-address nope: expected auto or HOST:PORT"):
        with RayExecutor("nope"):
            pass
