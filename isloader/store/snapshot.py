"""Snapshots of a table to any fsspec URI, atomic and self-checking.

A snapshot location is a directory (``/var/lib/isloader/shard-0``,
``s3://bucket/isloader/shard-0``). Each snapshot is two objects:

- ``snapshot-<version>.npz``: ``q``, ``seen``, ``pruned`` and the JSON meta;
- ``snapshot-<version>.complete``: the completion marker, holding the data's
  SHA-256 and size; it is written only after the data is fully stored.

Local files are written to a temporary name and renamed; object stores get a single
PUT, which is atomic. Restore takes the newest snapshot whose marker exists and whose
bytes match it, so a crash mid-write never leaves a half snapshot to be restored; it
falls back to an older one only where the write-ahead log covers the difference.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import fsspec
import numpy as np

from isloader.errors import SnapshotError
from isloader.store.files import LOCAL_FILES, FileOps
from isloader.store.records import TableState

__all__ = [
    "write_snapshot",
    "read_latest_snapshot",
    "list_snapshots",
    "save_table",
    "restore_table",
    "SNAPSHOTS_KEPT",
]

SNAPSHOTS_KEPT = 2


def _fs(uri: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path.rstrip("/")


def _local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol or "local" in fs.protocol


def _put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, files: FileOps) -> None:
    """Local: a temporary file, fsynced, renamed, the directory fsynced (``FileOps``);
    object stores: one PUT, which is atomic."""
    if _local(fs):
        files.write_atomic(path, data)
    else:
        fs.pipe_file(path, data)


def list_snapshots(uri: str, storage_options: dict[str, Any] | None = None) -> list[int]:
    """Versions with a completion marker, oldest first."""
    fs, root = _fs(uri, storage_options)
    try:
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        return []
    versions = []
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.startswith("snapshot-") and base.endswith(".complete"):
            versions.append(int(base[len("snapshot-") : -len(".complete")]))
    return sorted(versions)


def write_snapshot(
    uri: str,
    state: TableState,
    storage_options: dict[str, Any] | None = None,
    *,
    files: FileOps = LOCAL_FILES,
) -> str:
    """Write ``state`` under directory ``uri``; returns the data object's path."""
    fs, root = _fs(uri, storage_options)
    fs.makedirs(root, exist_ok=True)
    buffer = io.BytesIO()
    meta = np.frombuffer(json.dumps(state.meta).encode(), dtype=np.uint8)
    np.savez(buffer, q=state.q, seen=state.seen, pruned=state.pruned, meta=meta)
    data = buffer.getvalue()
    version = int(state.meta["version"])
    stem = f"{root}/snapshot-{version:016d}"
    _put_atomic(fs, f"{stem}.npz", data, files)
    marker = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "version": version}
    _put_atomic(fs, f"{stem}.complete", json.dumps(marker).encode(), files)
    for old in list_snapshots(uri, storage_options)[:-SNAPSHOTS_KEPT]:
        names = [f"{root}/snapshot-{old:016d}.complete", f"{root}/snapshot-{old:016d}.npz"]
        if _local(fs):
            for name in names:  # the marker first: a half-removed snapshot is incomplete
                files.unlink(name)
        else:
            fs.rm(names)
    return f"{stem}.npz"


def read_latest_snapshot(
    uri: str, storage_options: dict[str, Any] | None = None, *, wal_from: int | None = None
) -> TableState | None:
    """The newest complete, intact snapshot under ``uri``, or None when there is none.

    A newer snapshot that is damaged (unreadable marker, missing or mismatched data) is
    passed over for an older one only when the write-ahead log, whose first segment is
    ``wal_from``, still holds everything since that older one; otherwise falling back
    would silently lose the updates in between, and it raises instead.

    Raises:
        SnapshotError: the newest snapshot is damaged and nothing can stand in for it.
    """
    versions = list_snapshots(uri, storage_options)
    fs, root = _fs(uri, storage_options)
    failures = []
    for version in reversed(versions):
        stem = f"{root}/snapshot-{version:016d}"
        try:
            state = _read(fs, stem)
        except SnapshotError as exc:
            failures.append(str(exc))
            continue
        if failures and (wal_from is None or wal_from > int(state.meta.get("wal_segment", 0))):
            raise SnapshotError(
                f"{failures[0]}; the older snapshot {version} cannot stand in: the write-ahead "
                "log no longer holds the updates since it"
            )
        return state
    if failures:
        raise SnapshotError(f"{failures[0]}; no intact snapshot to fall back on")
    return None


def _read(fs: fsspec.AbstractFileSystem, stem: str) -> TableState:
    try:
        marker = json.loads(fs.cat_file(f"{stem}.complete"))
        size, digest = int(marker["size"]), str(marker["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"{stem}.complete: not a completion marker ({exc})") from None
    try:
        data = fs.cat_file(f"{stem}.npz")
    except FileNotFoundError as exc:
        raise SnapshotError(f"{stem}.npz: marker present but data missing") from exc
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise SnapshotError(f"{stem}.npz: contents do not match its completion marker")
    with np.load(io.BytesIO(data)) as arrays:
        meta = json.loads(arrays["meta"].tobytes().decode())
        return TableState(arrays["q"], arrays["seen"], arrays["pruned"], meta)


def save_table(table: Any, uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """Snapshot an ``ImportanceTable`` under directory ``uri``; returns the data's path."""
    return write_snapshot(uri, table.export_state(), storage_options)


def restore_table(table: Any, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Load the newest complete snapshot under ``uri`` into ``table``.

    Raises:
        SnapshotError: there is none, or it cannot stand in.
        SnapshotMismatchError: it was taken of another table.
    """
    state = read_latest_snapshot(uri, storage_options)
    if state is None:
        raise SnapshotError(f"{uri}: no complete snapshot found")
    table.load_state(state)
