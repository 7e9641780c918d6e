"""``StoreServer``: one shard behind gRPC, with auth, TLS, health, metrics and snapshots.

``isloader store serve`` runs it until SIGTERM/SIGINT, then writes a final snapshot.
Tests and ``LocalStore`` start it in-process on an ephemeral port.
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from isloader._proto import store_pb2_grpc
from isloader.config import StoreSettings
from isloader.store.service import ImportanceStoreServicer
from isloader.store.shard import Durability, StoreShard
from isloader.store.table import TableConfig

__all__ = ["StoreServer", "SERVICE_NAME"]

log = logging.getLogger(__name__)

SERVICE_NAME = "isloader.v1.ImportanceStore"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class _BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (health checks exempt)."""

    def __init__(self, token: str, on_failure: Callable[[], None]) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            on_failure()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        if details.method.startswith(_HEALTH_PREFIX):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(details)
        return self._deny


def _check_private(path: str | None) -> None:
    """Warn when others can read the token file: the token is the only credential (a
    container secret mounted read-only for all is the one case to accept knowingly)."""
    if path and os.stat(path).st_mode & 0o077:
        log.warning(
            "token file %s is readable by group or others (mode %o): chmod 600 it",
            path,
            os.stat(path).st_mode & 0o777,
        )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class StoreServer:
    """Owns the gRPC server, the shard, the health servicer and the snapshot timer."""

    def __init__(self, settings: StoreSettings, *, shard: StoreShard | None = None) -> None:
        """Serve ``shard`` when given (``LocalStore`` shares its own), else build one."""
        self.settings = settings
        start, stop = settings.index_range()
        durability = Durability(snapshot_uri=settings.snapshot_uri, wal_dir=settings.wal_dir)
        if durability.wal_dir and not durability.snapshot_uri:
            # A WAL without snapshots would grow forever: keep snapshots beside it.
            durability = Durability(
                snapshot_uri=f"{durability.wal_dir}/snapshots", wal_dir=durability.wal_dir
            )
        self.shard = shard or StoreShard(
            TableConfig(start, stop, alpha=settings.alpha, initial_q=settings.initial_q),
            durability,
        )
        self._owns_shard = shard is None
        max_bytes = int(settings.max_message_mb * 1024 * 1024)
        token = settings.bearer_token()
        _check_private(settings.token_file)
        interceptors = (
            [_BearerTokenInterceptor(token, self.shard.metrics.auth_failures.inc)] if token else []
        )
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="isloader-grpc")
        self._server = grpc.server(
            self._executor,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        store_pb2_grpc.add_ImportanceStoreServicer_to_server(
            ImportanceStoreServicer(self.shard, max_bytes), self._server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = f"{settings.host}:{settings.port}"
        if settings.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(_read(settings.tls_key or ""), _read(settings.tls_cert))],
                root_certificates=_read(settings.tls_client_ca) if settings.tls_client_ca else None,
                require_client_auth=bool(settings.tls_client_ca),
            )
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._metrics_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._snapshotter: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port`` the gRPC server listens on."""
        return f"{self.settings.host}:{self.port}"

    def start(self) -> StoreServer:
        """Start serving, with the metrics endpoint and the snapshot thread where
        configured; returns self."""
        self._server.start()
        if self.settings.metrics_port is not None:
            self._metrics_server, self._metrics_thread = start_http_server(
                self.settings.metrics_port, self.settings.host, registry=self.shard.metrics.registry
            )
            self.metrics_port = self._metrics_server.server_port
        if self.shard.durability.snapshot_uri:
            self._snapshotter = threading.Thread(target=self._snapshot_loop, daemon=True)
            self._snapshotter.start()
        self.shard.watch_writable(self._set_health)  # NOT_SERVING while it cannot log
        start, stop = self.settings.index_range()
        log.info("serving [%d, %d) on %s", start, stop, self.address)
        return self

    def _set_health(self, writable: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for name in ("", SERVICE_NAME):
            self.health.set(name, status.SERVING if writable else status.NOT_SERVING)

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving, then write a final snapshot (when configured) and close the WAL;
        every thread the server started is joined and its executor shut down."""
        self.health.enter_graceful_shutdown()
        self._stop.set()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        if self._snapshotter is not None:
            self._snapshotter.join()
            self._snapshotter = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            if self._metrics_thread is not None:
                self._metrics_thread.join()
        if self._owns_shard:
            self.shard.snapshot()
            self.shard.close()

    def serve_forever(self) -> None:
        """Block until SIGTERM or SIGINT, then stop cleanly (final snapshot included)."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        print(f"isloader store listening on {self.address}", flush=True)
        done.wait()
        log.info("shutting down")
        self.stop()

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.settings.snapshot_interval):
            try:
                # a shard that cannot log (its volume full) snapshots anyway: the old log
                # segments it then drops are what frees the volume
                self.shard.snapshot(force=not self.shard.writable)
            except Exception:  # keep serving; the next interval retries
                log.exception("periodic snapshot failed")
