"""Settings of the store server: flags, ``ISLOADER_*`` environment variables, secrets.

``StoreSettings`` is a pydantic-settings model: a field not given explicitly (a flag)
is read from ``ISLOADER_<NAME>``, then from a secrets file ``isloader_<name>`` in
``$ISLOADER_SECRETS_DIR`` (default ``/run/secrets``, where docker compose mounts
secrets), then takes its default. Values are parsed and validated by pydantic, so a
flag and a variable of the same field accept the same text.

``parse_storage_options`` turns ``key=value`` flags into fsspec options, typed: a
value that parses as JSON is that JSON (``anon=false`` is ``False``, ``4`` is 4).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StoreSettings", "ENV_PREFIX", "parse_storage_options", "read_token_file"]

ENV_PREFIX = "ISLOADER_"


def _secrets_dir() -> str | None:
    path = os.environ.get("ISLOADER_SECRETS_DIR", "/run/secrets")
    return path if Path(path).is_dir() else None


class StoreSettings(BaseSettings):
    """Everything ``isloader store serve`` takes; each field is also ``ISLOADER_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, secrets_dir=_secrets_dir()
    )

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
    token: SecretStr | None = Field(
        None, description="the bearer token itself (better: a secrets file or --token-file)"
    )
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
        # Compose mounts the secret where the secrets source finds it *and* names it in
        # ISLOADER_TOKEN_FILE: the same token twice is fine, two tokens are not.
        if (
            self.token is not None
            and self.token_file is not None
            and read_token_file(self.token_file) != self.token.get_secret_value().strip()
        ):
            raise ValueError(
                "the token (ISLOADER_TOKEN or the secret isloader_token) and the token file "
                "differ: give one"
            )
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

    def bearer_token(self) -> str | None:
        """The token clients must present, from ``token`` or ``token_file`` (None: open).

        Raises:
            ValueError: an empty token.
        """
        if self.token is not None:
            token = self.token.get_secret_value().strip()
            where = "the token setting"
        elif self.token_file:
            token = read_token_file(self.token_file)
            where = f"token file {self.token_file}"
        else:
            return None
        if not token:
            raise ValueError(f"{where} is empty")
        return token


def read_token_file(path: str | Path) -> str:
    """The token in ``path``, stripped; an unreadable file is a ``ValueError`` that says
    which user needs access (the images run as uid 10001, and a compose secret keeps
    the host file's owner and mode)."""
    try:
        return Path(path).read_text().strip()
    except PermissionError:
        raise ValueError(
            f"cannot read the token file {path} as uid {os.getuid()}: permission denied; "
            f"make it readable by that user (for the images: chown 10001 FILE; chmod 600 FILE)"
        ) from None


def parse_storage_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["anon=false", "client_kwargs={\\"endpoint_url\\": \\"http://...\\"}"]`` to a dict;
    values parse as JSON where they can, else stay strings.

    Raises:
        ValueError: an item without ``=``.
    """
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option wants key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
