"""An S3 endpoint that costs what object storage costs: moto's S3 server behind a
proxy that adds a fixed latency to every request and caps each connection's bandwidth.

Remote object storage is latency- and bandwidth-bound; moto on loopback is neither.
Both run in their own processes, so neither shares the trainer's interpreter.
``EmulatedObjectStore`` starts and stops them; ``python -m isloader.demo.endpoint``
is the proxy.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["EmulatedObjectStore", "serve_proxy"]

_CREDENTIALS = {"key": "isloader-demo", "secret": "isloader-demo"}


def serve_proxy(
    upstream: str, latency: float, bandwidth: float, port: int = 0
) -> ThreadingHTTPServer:
    """A threaded HTTP proxy to ``upstream``: each request waits ``latency`` seconds, each
    response is paced at ``bandwidth`` bytes per second per connection (0: no cap)."""
    target = urlsplit(upstream)
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _upstream(self, body: bytes | None, headers: dict[str, str]) -> Any:
            for attempt in (0, 1):
                if attempt or not hasattr(local, "conn"):
                    local.conn = http.client.HTTPConnection(target.hostname, target.port)
                try:
                    local.conn.request(self.command, self.path, body=body, headers=headers)
                    return local.conn.getresponse()
                except (http.client.HTTPException, OSError):
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        def _forward(self) -> None:
            start = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = target.netloc
            reply = self._upstream(body, headers)
            data = reply.read()
            pace = len(data) / bandwidth if bandwidth else 0.0
            time.sleep(max(0.0, latency + pace - (time.monotonic() - start)))
            self.send_response(reply.status)
            head = self.command == "HEAD"  # keep the upstream length: it is the object's
            for key, value in reply.getheaders():
                skip = ("transfer-encoding", "connection") + (() if head else ("content-length",))
                if key.lower() not in skip:
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class EmulatedObjectStore:
    """``with EmulatedObjectStore(latency_ms=20, bandwidth_mbps=200) as s3: ...``

    ``s3.storage_options`` reach the bucket through the proxy (what a loader sees);
    ``s3.direct_options`` reach moto itself (for uploads, and for measuring the
    endpoint's own ceiling).
    """

    def __init__(self, *, latency_ms: float = 20.0, bandwidth_mbps: float = 200.0) -> None:
        self.latency_ms = latency_ms
        self.bandwidth_mbps = bandwidth_mbps
        self._procs: list[subprocess.Popen] = []
        self.endpoint = self.direct_endpoint = ""

    def __enter__(self) -> EmulatedObjectStore:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": _CREDENTIALS["key"],
            "AWS_SECRET_ACCESS_KEY": _CREDENTIALS["secret"],
        }
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        try:
            moto_port, proxy_port = _free_port(), _free_port()
            moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
            self._procs.append(subprocess.Popen(moto, **quiet))
            _wait_for(moto_port, self._procs[-1])
            self.direct_endpoint = f"http://127.0.0.1:{moto_port}"
            proxy = [
                sys.executable,
                "-m",
                "isloader.demo.endpoint",
                self.direct_endpoint,
                "--latency-ms",
                str(self.latency_ms),
                "--bandwidth-mbps",
                str(self.bandwidth_mbps),
                "--port",
                str(proxy_port),
            ]
            self._procs.append(subprocess.Popen(proxy, **quiet))
            _wait_for(proxy_port, self._procs[-1])
            self.endpoint = f"http://127.0.0.1:{proxy_port}"
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._procs.clear()

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            **_CREDENTIALS,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    @property
    def direct_options(self) -> dict[str, Any]:
        return {
            **_CREDENTIALS,
            "client_kwargs": {"endpoint_url": self.direct_endpoint, "region_name": "us-east-1"},
        }

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; returns ``s3://name``."""
        import s3fs

        options = {**_CREDENTIALS, "client_kwargs": {"endpoint_url": self.direct_endpoint}}
        s3fs.S3FileSystem(**options).mkdir(name)  # us-east-1: no location constraint
        return f"s3://{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description="the latency and bandwidth proxy")
    parser.add_argument("upstream")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=0.0, help="per connection")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = serve_proxy(
        args.upstream, args.latency_ms / 1000, args.bandwidth_mbps * 1e6 / 8, args.port
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
