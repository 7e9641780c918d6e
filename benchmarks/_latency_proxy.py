"""An HTTP reverse proxy on 127.0.0.1 that adds a fixed delay to every request.

Remote object storage is latency-bound; moto on loopback is not. Putting this in
front of it makes each S3 request cost what it costs over a network.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["LatencyProxy"]


class LatencyProxy:
    """``with LatencyProxy("http://127.0.0.1:PORT", delay=0.02) as url: ...``"""

    def __init__(self, upstream: str, delay: float) -> None:
        target = urlsplit(upstream)
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                time.sleep(delay)
                if not hasattr(local, "conn"):
                    local.conn = http.client.HTTPConnection(target.hostname, target.port)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                try:
                    local.conn.request(self.command, self.path, body=body, headers=headers)
                    reply = local.conn.getresponse()
                except (http.client.HTTPException, OSError):
                    local.conn = http.client.HTTPConnection(target.hostname, target.port)
                    local.conn.request(self.command, self.path, body=body, headers=headers)
                    reply = local.conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                head = self.command == "HEAD"  # keep the upstream length: it is the object's
                for key, value in reply.getheaders():
                    skip = ("transfer-encoding", "connection") + (
                        () if head else ("content-length",)
                    )
                    if key.lower() not in skip:
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> str:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
