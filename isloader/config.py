"""Settings of the store server, from flags and ``ISLOADER_*`` environment variables.

Precedence: command-line flag, then environment variable, then the default here.
docker-compose sets the environment; an operator overrides with flags.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["StoreSettings", "ENV_PREFIX"]

ENV_PREFIX = "ISLOADER_"


class StoreSettings(BaseModel):
    """Everything ``isloader store serve`` takes; each field is also ``ISLOADER_<NAME>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: int | None = Field(None, ge=1, description="N, the dataset size")
    shard: int = Field(0, ge=0, description="this shard's number")
    num_shards: int = Field(1, ge=1, description="S, shards splitting [0, N) evenly")
    range: str | None = Field(None, description="START:STOP, overrides the even split")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 inside a container)")
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    alpha: float = Field(
        0.3, ge=0.0, lt=1.0, description="EMA memory a of Eq. 8 (0.3: no one-off tiny q)"
    )
    initial_q: float = Field(1.0, gt=0.0, description="q before a sample's first measurement")
    snapshot_uri: str | None = Field(None, description="fsspec directory URI for snapshots")
    snapshot_interval: float = Field(300.0, gt=0, description="seconds between snapshots")
    wal_dir: str | None = Field(None, description="local directory for the write-ahead log")
    tls_cert: str | None = Field(None, description="PEM server certificate")
    tls_key: str | None = Field(None, description="PEM server key")
    tls_client_ca: str | None = Field(None, description="PEM CA; requires client certs (mTLS)")
    token_file: str | None = Field(None, description="file holding the bearer token")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus port")
    max_message_mb: float = Field(64.0, gt=0, description="largest request accepted")
    workers: int = Field(16, ge=1, description="gRPC handler threads")

    @model_validator(mode="after")
    def _check(self) -> StoreSettings:
        if self.range is None and self.num_samples is None:
            raise ValueError("give --num-samples (with --shard/--num-shards) or --range START:STOP")
        if self.range is None and self.shard >= self.num_shards:
            raise ValueError(f"--shard {self.shard} must be < --num-shards {self.num_shards}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        start, stop = self.index_range()
        if not 0 <= start < stop:
            raise ValueError(f"empty or negative index range [{start}, {stop})")
        return self

    def index_range(self) -> tuple[int, int]:
        """``[start, stop)`` of this shard: explicit, or the even split of N over S."""
        if self.range is not None:
            try:
                start, stop = (int(x) for x in self.range.split(":"))
            except ValueError:
                raise ValueError(f"--range must be START:STOP, got {self.range!r}") from None
            return start, stop
        n, s = self.num_samples or 0, self.num_shards
        return self.shard * n // s, (self.shard + 1) * n // s

    def token(self) -> str | None:
        if not self.token_file:
            return None
        with open(self.token_file) as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"token file {self.token_file} is empty")
        return token

    @classmethod
    def from_sources(
        cls, flags: dict[str, Any], environ: dict[str, str] | None = None
    ) -> StoreSettings:
        """Merge flags (None = not given) over ``ISLOADER_*`` variables over defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = environ.get(ENV_PREFIX + name.upper())
            if env not in (None, ""):
                values[name] = env
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)
