"""No acknowledged update lost, no failed one applied: each defect found by trying the
store with faults combined (snapshots during writes, a full disk under concurrent
writers, retried reports), and crash states enumerated from recorded file calls."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.errors import (
    InvalidArgumentError,
    RequestTooOldError,
    StoreNotWritableError,
    StoreUnavailableError,
)
from isloader.pipeline.reporter import Reporter
from isloader.store.client import StoreClient
from isloader.store.crashcheck import RecordingFiles, run_check
from isloader.store.limits import MAX_SAMPLE, REQUEST_WINDOW
from isloader.store.requests import RequestLog
from isloader.store.shard import Durability, StoreShard
from isloader.store.table import ImportanceTable, TableConfig
from tests.helpers import StoreProcess, free_port

N = 400


def _durable(root: Path, files=None) -> Durability:
    extra = {"files": files} if files is not None else {}
    return Durability(str(root / "snapshots"), str(root / "wal"), **extra)


# -- snapshots while writers write --------------------------------------------------------


def test_a_snapshot_is_a_barrier_no_logged_update_falls_behind_it(tmp_path) -> None:
    """Updates logged but not yet synced when a snapshot rolls the log used to land in
    the old segment, behind the snapshot's replay point: lost at the next restart."""
    shard = StoreShard(TableConfig(0, N), _durable(tmp_path))
    acked: list[tuple[str, int]] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            shard.update(np.array([(w * 37 + seq) % N]), np.array([1.0]), f"w{w}", seq)
            acked.append((f"w{w}", seq))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for _ in range(30):  # back-to-back snapshots under four writers
        shard.snapshot()
    stop.set()
    for t in threads:
        t.join()
    # what a kill -9 leaves: the newest snapshot and the log after its segment, and
    # nothing the running process held (a fresh shard reads only the files)
    shutil.copytree(tmp_path, tmp_path.parent / "after-kill")
    restarted = StoreShard(TableConfig(0, N), _durable(tmp_path.parent / "after-kill"))
    lost = [r for r in acked if not restarted._table.applied(r)]
    assert acked and not lost
    restarted.close()
    shard.close()


def test_crash_states_lose_no_acknowledged_update_and_revive_no_failed_one() -> None:
    report = run_check(size=48, writers=3, rounds=20, points=40, per_point=4)
    assert report.crash_states_checked >= 200
    assert report.acknowledged > 0 and report.failed > 0  # the full disk was hit
    assert report.violations == [], report.violations[:3]


def test_new_segments_and_snapshot_renames_are_made_durable(tmp_path) -> None:
    files = RecordingFiles(str(tmp_path))
    shard = StoreShard(TableConfig(0, N), _durable(tmp_path, files))
    shard.update(np.array([1]), np.array([1.0]), "c", 1)
    shard.snapshot()
    shard.close()
    kinds = [(op.kind, op.path) for op in files.ops]
    created = [i for i, (k, p) in enumerate(kinds) if k == "create" and p.startswith("wal")]
    renamed = [i for i, (k, _) in enumerate(kinds) if k == "rename"]
    assert created and renamed
    for i in created + renamed:  # each followed by an fsync of its directory
        assert any(k == "fsync_dir" for k, _ in kinds[i + 1 : i + 3])


# -- a full disk under concurrent writers ---------------------------------------------------


class _FullDisk(RecordingFiles):
    """Writes fail with ENOSPC while ``full`` is set."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.full = False

    def write(self, fd: int, data: bytes) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(fd, data)


def test_a_full_disk_acknowledges_nothing_it_lost_and_revives_nothing_it_refused(tmp_path) -> None:
    files = _FullDisk(str(tmp_path))
    shard = StoreShard(TableConfig(0, N), _durable(tmp_path, files))
    states: list[bool] = []
    shard.watch_writable(states.append)
    outcomes: dict[tuple[str, int], bool] = {}
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        for seq in range(1, 60):
            if seq == 20:
                files.full = True
            if seq == 40:
                files.full = False
            try:
                shard.update(np.array([w * 10 + seq % 10]), np.array([float(seq)]), f"w{w}", seq)
                outcomes[(f"w{w}", seq)] = True
            except StoreNotWritableError:
                outcomes[(f"w{w}", seq)] = False
            except BaseException as exc:  # e.g. "truth value of an array is ambiguous"
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shard.close()
    assert not errors, errors[:1]
    assert False in states and states[-1]  # NOT_SERVING while full, serving again
    assert any(outcomes.values()) and not all(outcomes.values())
    restarted = StoreShard(TableConfig(0, N), _durable(tmp_path))
    for request, ok in outcomes.items():
        assert restarted._table.applied(request) == ok, (request, ok)
    restarted.close()


# -- retried reports ------------------------------------------------------------------------


def test_a_report_retried_after_a_shard_restart_is_applied_once(tmp_path) -> None:
    """Three rounds of reports with the EMA: a doubled round would move q."""
    shards = [
        StoreProcess(["--num-samples", str(N), "--shard", str(s), "--num-shards", "2",
                      "--port", str(free_port()), "--alpha", "0.5",
                      "--wal-dir", str(tmp_path / f"w{s}")])
        for s in (0, 1)
    ]  # fmt: skip
    try:
        client = StoreClient([s.address for s in shards], retry_budget=0.3, timeout=0.5)
        metric = lambda outputs, targets: targets.double()  # noqa: E731 - q is the target
        reporter = Reporter(client, metric)
        rounds = [np.full(N, v) for v in (1.0, 5.0, 9.0)]
        index = torch.arange(N)
        for r, values in enumerate(rounds):
            if r == 1:
                shards[1].kill()  # its half of round 1 fails, shard 0's half applies
            for part in torch.split(index, 100):
                reporter.report(part, torch.zeros(len(part), 2), torch.tensor(values[part]))
            if r == 1:
                time.sleep(1.0)  # past the retry budget: the update fails, stays queued
                shards[1].start()
            _flush_until_sent(reporter)  # the retry carries the same request id
        reporter.close()
        q = client.lookup(np.arange(N))
        expected = 0.5 * (0.5 * 1.0 + 0.5 * 5.0) + 0.5 * 9.0
        assert np.allclose(q, expected), np.unique(np.round(q, 3))
        client.close()
    finally:
        for s in shards:
            s.stop()


def _flush_until_sent(reporter: Reporter, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            reporter.flush()
            return
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- bounds ---------------------------------------------------------------------------------


def test_eps_and_epoch_jumps_that_would_brick_or_freeze_a_shard_are_refused(tmp_path) -> None:
    shard = StoreShard(TableConfig(0, N), _durable(tmp_path))
    shard.update(np.arange(N), np.full(N, 1e29))
    with pytest.raises(InvalidArgumentError, match="past"):
        shard.end_epoch(0, 9.5e29)  # q would exceed the bound the snapshot loader enforces
    with pytest.raises(InvalidArgumentError, match="beyond"):
        shard.end_epoch(2**40 - 1, 0.1)  # would make every later epoch end a no-op
    assert shard.end_epoch(0, 1e28) and shard.epoch == 1
    shard.snapshot()
    shard.close()
    restarted = StoreShard(TableConfig(0, N), _durable(tmp_path))  # still starts
    assert restarted.epoch == 1 and restarted.end_epoch(1, 0.1)
    restarted.close()


def test_request_ids_far_ahead_or_too_old_are_refused_not_silently_dropped() -> None:
    table = ImportanceTable(TableConfig(0, 10))
    one = (np.array([1]), np.array([0.5]))
    assert table.update(*one, request=("c", 1))
    with pytest.raises(InvalidArgumentError, match="beyond"):
        table.update(*one, request=("c", 2**24))  # used to hide the next 1,000 updates
    for seq in range(2, 1002):
        assert table.update(*one, request=("c", seq))
    for seq in (40_000, REQUEST_WINDOW + 5000):  # within a window of the highest each time
        assert table.update(*one, request=("c", seq))
    with pytest.raises(RequestTooOldError):
        table.update(*one, request=("c", 3))  # cannot tell: refused, never "applied"
    assert not table.update(*one, request=("c", REQUEST_WINDOW + 5000))  # a real retry


def test_the_request_log_takes_a_bounded_memory() -> None:
    log = RequestLog(window=1 << 16, max_clients=64)
    for c in range(200):
        for seq in (1, 10_000, 60_000):
            log.check(f"c{c}", seq)
            log.record(f"c{c}", seq)
    assert len(log) == 64 and log.nbytes == 64 * (1 << 16) // 8  # 8 KiB a client
    again = RequestLog.from_dict(log.to_dict(), 1 << 16)
    assert again.applied("c199", 10_000) and not again.applied("c199", 10_001)
    old = RequestLog.from_dict({"c": [1, 5, 7]}, 1 << 16)  # the older snapshot form
    assert old.applied("c", 5) and old.applied("c", 1) and not old.applied("c", 6)


def test_a_sample_whose_reply_could_not_be_sent_is_refused_first() -> None:
    proc = StoreProcess(["--num-samples", str(N), "--port", "0"])
    try:
        stub = store_pb2_grpc.ImportanceStoreStub(grpc.insecure_channel(proc.address))
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(count=MAX_SAMPLE, seed=1))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "reply" in info.value.details()
        assert len(stub.Sample(pb.SampleRequest(count=1000, seed=1)).indices) == 8000
    finally:
        proc.stop()


def test_an_async_update_waits_at_most_put_timeout_for_room() -> None:
    proc = StoreProcess(["--num-samples", str(N), "--port", "0"])
    client = StoreClient([proc.address], retry_budget=5, timeout=5, max_pending=2,
                         put_timeout=0.5)  # fmt: skip
    os.kill(proc.proc.pid, signal.SIGSTOP)  # a hung shard
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="unsent"):
            for i in range(10):
                client.update(np.array([i]), np.array([1.0]), wait=False)
        assert time.monotonic() - start < 5  # bounded by put_timeout, not the RPC budget
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    client.flush()
    client.close()
    proc.stop()


# -- a real process killed during a snapshot, a real full volume ----------------------------


def _tmpfs_available() -> bool:
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /tmp && true"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="cannot mount a tmpfs in a user namespace")
def test_a_real_full_wal_volume_under_writers_then_kills_during_snapshots(tmp_path) -> None:
    """One shard whose log lives on a 64 KiB tmpfs (writers fill it between snapshots,
    which free it), one killed with SIGKILL whenever it is caught writing a snapshot:
    afterwards no acknowledged update is lost."""
    wal = tmp_path / "wal-full"
    wal.mkdir()
    serve = f"exec {sys.executable} -m isloader.cli store serve " + " ".join(
        ["--num-samples", str(2 * N), "--shard", "1", "--num-shards", "2", "--port", "0",
         "--alpha", "0", "--wal-dir", str(wal), "--snapshot-uri", str(tmp_path / "snap-1"),
         "--snapshot-interval", "2"]
    )  # fmt: skip
    full = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size=64k tmpfs {wal} && {serve}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    address = ""
    while not address:
        line = full.stdout.readline()
        assert line, "the shard on the small volume did not start"
        if "listening on" in line:
            address = line.strip().rsplit(" ", 1)[-1]
    threading.Thread(target=full.stdout.read, daemon=True).start()
    killed = StoreProcess(
        ["--num-samples", str(2 * N), "--shard", "0", "--num-shards", "2",
         "--port", str(free_port()),
         "--alpha", "0", "--wal-dir", str(tmp_path / "wal-0"), "--snapshot-uri",
         str(tmp_path / "snap-0"), "--snapshot-interval", "0.05"]
    )  # fmt: skip
    last_acked = np.full(2 * N, -1.0)
    stop = threading.Event()

    def writer(w: int) -> None:  # disjoint indices, rising values: the last write wins
        client = StoreClient([killed.address, address], retry_budget=8, timeout=2)
        k = 0
        while not stop.is_set():
            k += 1
            i = w + 4 * (k % (N // 2))
            try:
                client.update(np.array([i]), np.array([float(k)]))
                last_acked[i] = k
            except StoreUnavailableError:
                pass  # its outcome is unknown to the caller: not counted either way
        client.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    kills = 0
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        if kills < 4 and list((tmp_path / "snap-0").glob("*.tmp-*")):  # writing a snapshot
            killed.kill()
            kills += 1
            killed.start()
    stop.set()
    for t in threads:
        t.join(60)
    assert kills >= 1
    with StoreClient([killed.address, address]) as client:
        stored = client.lookup(np.arange(2 * N))
    acked = last_acked >= 0
    assert acked.sum() > 100
    assert (stored[acked] >= last_acked[acked]).all()  # nothing acknowledged was lost
    killed.stop()
    full.kill()
    full.wait(10)
