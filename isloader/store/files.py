"""The filesystem calls a shard's durable files go through, in one place.

The write-ahead log and local snapshots create, write, fsync, truncate, rename and
unlink files and fsync their directories only through a ``FileOps``, so durability
depends on what these calls promise and nothing else. The crash-consistency checker
(``isloader.store.crashcheck``) records every call through a subclass and builds the
files a crash could leave behind.

A new or renamed name is durable only once its directory is fsynced (POSIX does not
promise it otherwise): ``create`` and ``replace`` do that.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["FileOps", "LOCAL_FILES"]


class FileOps:
    """POSIX file calls on the local filesystem (unbuffered: what ``write`` returned
    from is in the kernel, nothing waits in a Python buffer to reach it later)."""

    def create(self, path: str) -> int:
        """Open ``path`` for appending, creating it durably (its directory is fsynced)."""
        existed = os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if not existed:
            self.fsync_dir(os.path.dirname(path) or ".")
        return fd

    def write(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` (the OS may take it in pieces)."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fsync(self, fd: int) -> None:
        """Make the file's written bytes durable."""
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes (durable only after ``fsync``)."""
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        """Close the descriptor."""
        os.close(fd)

    def size(self, fd: int) -> int:
        """The file's current size in bytes."""
        return os.fstat(fd).st_size

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` and make the rename durable."""
        os.replace(src, dst)
        self.fsync_dir(os.path.dirname(dst) or ".")

    def unlink(self, path: str) -> None:
        """Remove ``path`` if it exists (durable only after ``fsync_dir``)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creates, renames, unlinks) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_atomic(self, path: str, data: bytes) -> None:
        """``path`` holds ``data`` whole or not at all, durably: a temporary file written
        and fsynced, renamed over ``path``, the directory fsynced."""
        tmp = f"{path}.tmp-{os.getpid()}-{id(data):x}"
        fd = self.create(tmp)
        try:
            try:
                self.write(fd, data)
                self.fsync(fd)
            finally:
                self.close(fd)
            self.replace(tmp, path)
        except BaseException:
            self.unlink(tmp)
            raise


LOCAL_FILES = FileOps()
