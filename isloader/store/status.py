"""The one table between gRPC status codes and isloader errors, both directions."""

from __future__ import annotations

import grpc

from isloader import errors

__all__ = ["STATUS_FOR_ERROR", "ERROR_FOR_STATUS", "status_for", "error_for"]

# Most specific first: the first isinstance match wins.
STATUS_FOR_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.IndexOutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.UnknownLayoutError, grpc.StatusCode.NOT_FOUND),
    (errors.MessageTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.RequestTooOldError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.SnapshotError, grpc.StatusCode.DATA_LOSS),
    (errors.StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.StoreNotWritableError, grpc.StatusCode.UNAVAILABLE),
    (errors.RequestInProgressError, grpc.StatusCode.UNAVAILABLE),
)

ERROR_FOR_STATUS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.OK: errors.IsloaderError,  # never raised; listed so every code maps
    grpc.StatusCode.CANCELLED: errors.StoreUnavailableError,
    grpc.StatusCode.UNKNOWN: errors.IsloaderError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.StoreUnavailableError,
    grpc.StatusCode.NOT_FOUND: errors.UnknownLayoutError,
    grpc.StatusCode.ALREADY_EXISTS: errors.IsloaderError,
    grpc.StatusCode.PERMISSION_DENIED: errors.AuthenticationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.MessageTooLargeError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.RequestTooOldError,
    grpc.StatusCode.ABORTED: errors.StoreUnavailableError,
    grpc.StatusCode.OUT_OF_RANGE: errors.IndexOutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: errors.IsloaderError,
    grpc.StatusCode.INTERNAL: errors.IsloaderError,
    grpc.StatusCode.UNAVAILABLE: errors.StoreUnavailableError,
    grpc.StatusCode.DATA_LOSS: errors.SnapshotError,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthenticationError,
}


def status_for(exc: Exception) -> grpc.StatusCode:
    """The gRPC status an isloader error is sent as (INTERNAL for anything unmapped)."""
    for kind, code in STATUS_FOR_ERROR:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def error_for(code: grpc.StatusCode, message: str) -> Exception:
    """The isloader error a gRPC status code is raised as on the client."""
    return ERROR_FOR_STATUS[code](message)
