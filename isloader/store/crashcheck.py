"""Crash-consistency checking of a shard's files, by enumerating crash states.

A shard's promise is that no acknowledged update is lost and no update answered as
failed comes back. Killing processes tests it poorly (the page cache survives a
``kill -9``); this checker tests what a power cut or a kernel crash could leave, the
way file-system and database test suites do (ALICE, CrashMonkey, SQLite's crash tests):

1. **Record.** A workload runs against a real ``StoreShard`` (write-ahead log and
   snapshots in a local directory) whose ``FileOps`` record every call in order:
   create, write, fsync, truncate, rename, unlink, directory fsync. Writers run
   concurrently; snapshots, epoch ends and prunes interleave with them; writes can be
   made to fail (a full disk) at chosen points. Each call's answer is noted with the
   position in the recording at which it was given.
2. **Model.** Replaying the recording up to a crash point gives, per file, its durable
   content (as of its last fsync) and the writes and truncations since; per directory,
   its durable entries (as of its last fsync) and the creates, renames and unlinks since.
3. **Crash states.** A state keeps all durable data, any prefix of each file's pending
   operations, and any prefix of each directory's pending entry changes (metadata
   reaches the disk in order, as with a journaling file system). Every crash point gets
   the "only what was fsynced" and "everything written" states plus seeded random ones.
4. **Check.** A shard starts on each state's files. It must start, or refuse with a
   named isloader error; every update acknowledged before the crash point must be
   applied (its request id known to the table), no update answered as failed before
   the crash point may be (one still waiting for its answer may go either way), and
   every acknowledged epoch end must be reflected.

``run_check`` does it all and returns a ``CrashReport``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isloader.errors import IsloaderError
from isloader.store.files import FileOps
from isloader.store.shard import Durability, StoreShard
from isloader.store.table import TableConfig

__all__ = ["RecordingFiles", "CrashReport", "run_check", "crash_states"]


@dataclass(frozen=True)
class _Op:
    kind: str  # create, write, fsync, truncate, rename, unlink, fsync_dir
    path: str = ""
    data: bytes = b""
    size: int = 0
    target: str = ""


class RecordingFiles(FileOps):
    """``FileOps`` that does every call for real and records it (thread-safe), and can
    fail writes at chosen points (``fail_writes``: calls numbered from 0)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ops: list[_Op] = []
        self._fds: dict[int, str] = {}
        self._lock = threading.RLock()
        self.fail_writes: set[int] = set()
        self._writes = 0

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def _add(self, op: _Op) -> None:
        self.ops.append(op)

    def create(self, path: str) -> int:
        """Open for appending (recorded as a create, with its directory fsync, when new)."""
        with self._lock:
            existed = os.path.exists(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[fd] = self._rel(path)
            if not existed:
                self._add(_Op("create", self._rel(path)))
                self.fsync_dir(os.path.dirname(path))
            return fd

    def write(self, fd: int, data: bytes) -> None:
        """Write for real and record it, or fail with ENOSPC where ``fail_writes`` says."""
        with self._lock:
            number = self._writes
            self._writes += 1
            if number in self.fail_writes:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            super().write(fd, data)
            self._add(_Op("write", self._fds[fd], bytes(data)))

    def fsync(self, fd: int) -> None:
        """Fsync for real; recorded: the file's writes so far are durable."""
        with self._lock:
            os.fsync(fd)
            self._add(_Op("fsync", self._fds[fd]))

    def truncate(self, fd: int, size: int) -> None:
        """Truncate for real and record it (durable only after an fsync)."""
        with self._lock:
            os.ftruncate(fd, size)
            self._add(_Op("truncate", self._fds[fd], size=size))

    def close(self, fd: int) -> None:
        """Close the descriptor (not recorded: it changes nothing on disk)."""
        with self._lock:
            os.close(fd)
            self._fds.pop(fd, None)

    def replace(self, src: str, dst: str) -> None:
        """Rename for real, recorded, then the directory fsync (recorded too)."""
        with self._lock:
            os.replace(src, dst)
            self._add(_Op("rename", self._rel(src), target=self._rel(dst)))
            self.fsync_dir(os.path.dirname(dst))

    def unlink(self, path: str) -> None:
        """Remove for real where it exists, and record it."""
        with self._lock:
            if os.path.exists(path):
                os.unlink(path)
                self._add(_Op("unlink", self._rel(path)))

    def fsync_dir(self, path: str) -> None:
        """Fsync the directory for real; recorded: its entry changes so far are durable."""
        with self._lock:
            super().fsync_dir(path)
            self._add(_Op("fsync_dir", self._rel(path)))

    @property
    def position(self) -> int:
        """How many calls are recorded (an answer given now is after all of them)."""
        with self._lock:
            return len(self.ops)


# -- the model ---------------------------------------------------------------------------


class _Inode:
    def __init__(self) -> None:
        self.durable = b""
        self.pending: list[_Op] = []

    def content(self, keep: int) -> bytes:
        data = self.durable
        for op in self.pending[:keep]:
            data = data + op.data if op.kind == "write" else data[: op.size]
        return data


class _Model:
    """Files and directories as a recording prefix leaves them (see the module)."""

    def __init__(self) -> None:
        self.inodes: list[_Inode] = []
        self.names: dict[str, int] = {}  # what a process sees now: path -> inode
        self.durable: dict[str, dict[str, int]] = {}  # directory -> {name: inode}, fsynced
        self.pending: dict[str, list[tuple[str, str, int]]] = {}  # dir -> (op, name, inode)

    def apply(self, op: _Op) -> None:
        directory = os.path.dirname(op.path)
        if op.kind == "create":
            self.inodes.append(_Inode())
            self.names[op.path] = len(self.inodes) - 1
            self.pending.setdefault(directory, []).append(("link", op.path, len(self.inodes) - 1))
        elif op.kind in ("write", "truncate"):
            self.inodes[self.names[op.path]].pending.append(op)
        elif op.kind == "fsync":
            inode = self.inodes[self.names[op.path]]
            inode.durable, inode.pending = inode.content(len(inode.pending)), []
        elif op.kind == "rename":
            node = self.names.pop(op.path)
            self.names[op.target] = node
            self.pending.setdefault(directory, []).append(("unlink", op.path, node))
            target_dir = os.path.dirname(op.target)
            self.pending.setdefault(target_dir, []).append(("link", op.target, node))
        elif op.kind == "unlink":
            node = self.names.pop(op.path)
            self.pending.setdefault(directory, []).append(("unlink", op.path, node))
        elif op.kind == "fsync_dir":
            entries = self.durable.setdefault(op.path, {})
            for change in self.pending.pop(op.path, []):
                _change(entries, change)

    def state(self, keep_files: dict[int, int], keep_dirs: dict[str, int]) -> dict[str, bytes]:
        """Every file of one crash state: path -> content."""
        out = {}
        for directory in set(self.durable) | set(self.pending):
            entries = dict(self.durable.get(directory, {}))
            for change in self.pending.get(directory, [])[: keep_dirs.get(directory, 0)]:
                _change(entries, change)
            for path, node in entries.items():
                inode = self.inodes[node]
                out[path] = inode.content(keep_files.get(node, 0))
        return out


def _change(entries: dict[str, int], change: tuple[str, str, int]) -> None:
    op, name, node = change
    if op == "link":
        entries[name] = node
    elif entries.get(name) == node:
        del entries[name]


def crash_states(
    ops: list[_Op], points: list[int], per_point: int, seed: int = 0
) -> Iterator[tuple[int, dict[str, bytes]]]:
    """``(crash point, files)`` for each point: what was fsynced, everything, and
    ``per_point`` random prefixes of the pending operations."""
    rng = random.Random(seed)
    model, done = _Model(), 0
    for point in sorted(points):
        for op in ops[done:point]:
            model.apply(op)
        done = point
        files = {n: len(i.pending) for n, i in enumerate(model.inodes) if i.pending}
        dirs = {d: len(p) for d, p in model.pending.items() if p}
        yield point, model.state({}, {})
        yield point, model.state(files, dirs)
        for _ in range(per_point):
            yield (
                point,
                model.state(
                    {n: rng.randint(0, k) for n, k in files.items()},
                    {d: rng.randint(0, k) for d, k in dirs.items()},
                ),
            )


# -- the workload and the check ----------------------------------------------------------


@dataclass
class _Answer:
    """What the workload was told: an update's request id, and where in the recording."""

    request: tuple[str, int]
    at: int
    ok: bool


@dataclass
class CrashReport:
    """What the checker did and found."""

    operations: int = 0
    crash_points: int = 0
    crash_states_checked: int = 0
    acknowledged: int = 0
    failed: int = 0
    refused_to_start: int = 0  # with a named error (allowed)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The figures as a JSON-ready dict (violations counted, the first five quoted)."""
        return {
            "operations": self.operations,
            "crash_points": self.crash_points,
            "crash_states_checked": self.crash_states_checked,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "refused_to_start": self.refused_to_start,
            "violations": len(self.violations),
            "first_violations": self.violations[:5],
        }


def _workload(
    root: Path, files: RecordingFiles, size: int, writers: int, rounds: int, seed: int
) -> tuple[list[_Answer], list[tuple[int, int]]]:
    """Concurrent updates with snapshots, epoch ends and prunes between them; returns
    the update answers and the acknowledged epoch ends ``(epoch, at)``."""
    durability = Durability(str(root / "snapshots"), str(root / "wal"), files=files)
    shard = StoreShard(TableConfig(0, size, alpha=0.3), durability)
    answers: list[_Answer] = []
    epochs: list[tuple[int, int]] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        rng = np.random.default_rng([seed, w])
        for r in range(rounds):
            request = (f"client-{w}", r + 1)
            idx = rng.choice(size, 4, replace=False)
            try:
                shard.update(idx, rng.random(4) + 0.1, *request)
                ok = True
            except IsloaderError:
                ok = False
            with lock:
                answers.append(_Answer(request, files.position, ok))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(seed)
    for epoch in range(3):
        for _ in range(2):
            with contextlib.suppress(IsloaderError):  # the disk was full: the next retries
                shard.snapshot()
        try:
            shard.end_epoch(epoch, 0.01)
            epochs.append((epoch, files.position))
            if epoch:
                shard.prune(float(rng.uniform(0.05, 0.2)), epoch=epoch)
        except IsloaderError:
            pass
    for t in threads:
        t.join()
    shard.snapshot()
    shard.close()
    return answers, epochs


def run_check(
    *,
    size: int = 64,
    writers: int = 3,
    rounds: int = 40,
    points: int = 60,
    per_point: int = 6,
    full_disk_every: int = 29,
    seed: int = 0,
) -> CrashReport:
    """Record a workload (``writers`` threads, ``rounds`` updates each, a full disk every
    ``full_disk_every``-th write) and check ``points`` crash points with
    ``per_point + 2`` states each; see the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="isloader-crash-"))
    try:
        files = RecordingFiles(str(work))
        files.fail_writes = set(range(full_disk_every, 100_000, full_disk_every))
        answers, epochs = _workload(work, files, size, writers, rounds, seed)
        report = CrashReport(operations=len(files.ops))
        report.acknowledged = sum(a.ok for a in answers)
        report.failed = sum(not a.ok for a in answers)
        chosen = sorted(set(np.linspace(0, len(files.ops), points).astype(int).tolist()))
        report.crash_points = len(chosen)
        for point, state in crash_states(files.ops, chosen, per_point, seed):
            report.crash_states_checked += 1
            _check_state(work / "state", state, point, answers, epochs, size, report)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_state(
    where: Path,
    state: dict[str, bytes],
    point: int,
    answers: list[_Answer],
    epochs: list[tuple[int, int]],
    size: int,
    report: CrashReport,
) -> None:
    shutil.rmtree(where, ignore_errors=True)
    for name in ("wal", "snapshots"):
        (where / name).mkdir(parents=True, exist_ok=True)
    for path, data in state.items():
        target = where / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    try:
        shard = StoreShard(
            TableConfig(0, size, alpha=0.3),
            Durability(str(where / "snapshots"), str(where / "wal")),
            apply_inline=True,
        )
    except IsloaderError:
        report.refused_to_start += 1  # a named refusal is allowed; losing data is not
        return
    except Exception as exc:
        report.violations.append(f"crash at {point}: start-up failed with {exc!r}")
        return
    try:
        table = shard._table
        for answer in answers:
            applied = table.applied(answer.request)
            if answer.ok and answer.at <= point and not applied:
                report.violations.append(f"crash at {point}: acknowledged {answer.request} lost")
            if not answer.ok and answer.at <= point and applied:  # after it was answered
                report.violations.append(f"crash at {point}: failed {answer.request} applied")
        done = [e for e, at in epochs if at <= point]
        if done and table.epoch < max(done) + 1:
            report.violations.append(
                f"crash at {point}: epoch end {max(done)} acknowledged, shard at {table.epoch}"
            )
    finally:
        shard.close()
