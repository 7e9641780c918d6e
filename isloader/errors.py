"""The error tree.

Each error subclasses the builtin it means, so ``except ValueError`` keeps working
for callers who do not know isloader. The gRPC status <-> error table lives in
``isloader.store.status``.
"""

from __future__ import annotations

__all__ = [
    "IsloaderError",
    "InvalidArgumentError",
    "IndexOutOfRangeError",
    "MessageTooLargeError",
    "AuthenticationError",
    "StoreUnavailableError",
    "StoreNotWritableError",
    "RequestInProgressError",
    "RequestTooOldError",
    "UnknownLayoutError",
    "SnapshotError",
    "SnapshotMismatchError",
    "ShardError",
    "ShardChangedError",
    "CorruptShardError",
    "MissingShardError",
    "TrainerStalledError",
]


class IsloaderError(Exception):
    """Base of every error isloader raises on purpose."""


class InvalidArgumentError(IsloaderError, ValueError):
    """Input that can never be valid: NaN, negative importance, length mismatch."""


class IndexOutOfRangeError(IsloaderError, IndexError):
    """A sample index outside the range a table or catalog owns."""


class MessageTooLargeError(IsloaderError, ValueError):
    """A request larger than the store accepts."""


class AuthenticationError(IsloaderError, PermissionError):
    """A missing or wrong bearer token."""


class StoreUnavailableError(IsloaderError, ConnectionError):
    """A store shard that stays unreachable after retries; the message names it."""


class StoreNotWritableError(StoreUnavailableError):
    """A shard that cannot log a change durably (disk full, read-only): it refuses
    writes and reports NOT_SERVING until it can log again; nothing was applied."""


class RequestInProgressError(StoreUnavailableError):
    """The same ``(client_id, seq)`` is still being logged: retry after a moment (the
    first attempt either completes, and the retry is a duplicate, or fails)."""


class RequestTooOldError(IsloaderError, LookupError):
    """A ``(client_id, seq)`` so far below the client's newest request that the store
    can no longer tell whether it was applied: nothing is applied (the client has sent
    more than the store's request window since; it should not retry it blindly)."""


class UnknownLayoutError(IsloaderError, LookupError):
    """A unit layout the store does not hold (never registered, or the shard restarted):
    the client registers it again."""


class SnapshotError(IsloaderError, RuntimeError):
    """A snapshot that is missing its completion marker, truncated or corrupt."""


class SnapshotMismatchError(SnapshotError, ValueError):
    """A snapshot taken under another configuration or index range."""


class ShardError(IsloaderError, OSError):
    """A data shard that cannot be served; ``uri`` names it."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


class ShardChangedError(ShardError):
    """A shard whose size or etag differs from the catalog: re-run ``isloader index``."""


class CorruptShardError(ShardError):
    """A shard that is truncated or cannot be decoded."""


class MissingShardError(ShardError, FileNotFoundError):
    """A shard listed in the catalog that no longer exists."""


class TrainerStalledError(IsloaderError, TimeoutError):
    """A read task waited past its timeout for a trainer rank to reach the step its plan
    may be drawn at: drawing it anyway would break the staleness bound. The rank has
    stopped reporting (crashed, hung, or never calls ``report``)."""
