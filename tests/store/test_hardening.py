"""The store as an adversarial operator or a careless client would try it: real server
processes on 127.0.0.1, faults set up here (a file-size limit standing in for a full
disk, SIGKILL, SIGSTOP, a log segment that cannot be created, damaged snapshots)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.errors import (
    InvalidArgumentError,
    MessageTooLargeError,
    SnapshotError,
    StoreNotWritableError,
    StoreUnavailableError,
)
from isloader.store.client import StoreClient
from isloader.store.limits import MAX_CLIENTS, MAX_SAMPLE
from isloader.store.shard import Durability, StoreShard
from isloader.store.snapshot import save_table
from isloader.store.table import ImportanceTable, TableConfig
from tests.helpers import StoreProcess, free_port

N = 200


def _raw(address: str) -> store_pb2_grpc.ImportanceStoreStub:
    return store_pb2_grpc.ImportanceStoreStub(grpc.insecure_channel(address))


def _health(address: str) -> int:
    channel = grpc.insecure_channel(address)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
    finally:
        channel.close()


@pytest.fixture()
def shard():
    proc = StoreProcess(["--num-samples", str(N), "--port", "0"])
    yield proc
    proc.stop()


# -- requests that could exhaust or brick a shard -------------------------------------


def test_huge_sample_counts_are_refused_and_the_shard_keeps_serving(shard) -> None:
    stub = _raw(shard.address)
    with pytest.raises(grpc.RpcError) as info:
        stub.Sample(pb.SampleRequest(count=2**32 - 1, seed=1))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with StoreClient([shard.address]) as client:
        with pytest.raises(MessageTooLargeError):  # as the shard answers: RESOURCE_EXHAUSTED
            client.sample(2**32, seed=1)
        with pytest.raises(InvalidArgumentError):
            client.sample(1.5, seed=1)  # type: ignore[arg-type]
        assert len(client.sample(MAX_SAMPLE // 64, seed=1)) == MAX_SAMPLE // 64


def test_epoch_numbers_values_and_eps_that_would_brick_a_shard_are_refused(shard) -> None:
    stub = _raw(shard.address)
    for call, request in [
        (stub.EndEpoch, pb.EndEpochRequest(epoch=2**63 - 1, eps=0.1)),
        (stub.EndEpoch, pb.EndEpochRequest(epoch=1, eps=1e308)),
        (stub.Prune, pb.PruneRequest(threshold=1.0, epoch=2**62)),
        (
            stub.Update,
            pb.UpdateRequest(
                indices=np.array([1, 2], "<i8").tobytes(),
                values=np.array([1e308, 1e308], "<f8").tobytes(),
            ),
        ),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with StoreClient([shard.address]) as client:
        stats = client.stats()
        assert stats.epoch == 0 and np.isfinite(stats.total_mass)
        assert client.end_epoch(0, 0.1)
    assert _health(shard.address) == health_pb2.HealthCheckResponse.SERVING


def test_request_ids_that_would_poison_the_request_log_are_refused(shard) -> None:
    stub = _raw(shard.address)
    one = {"indices": np.array([3], "<i8").tobytes(), "values": np.array([0.5], "<f8").tobytes()}
    for client_id, seq in [("c", 2**64 - 1), ("x" * 70_000, 1)]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Update(pb.UpdateRequest(client_id=client_id, seq=seq, **one))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the same clients' ordinary requests still apply
    assert stub.Update(pb.UpdateRequest(client_id="c", seq=1, **one)).applied
    assert stub.Update(pb.UpdateRequest(client_id="c", seq=2, **one)).applied


def test_the_request_log_remembers_a_bounded_number_of_clients() -> None:
    table = ImportanceTable(TableConfig(0, 10))
    for c in range(MAX_CLIENTS + 500):
        table.update(np.array([1]), np.array([0.5]), request=(f"client-{c}", 1))
    assert len(table._requests) == MAX_CLIENTS
    assert not table.update(np.array([1]), np.array([0.5]), request=(f"client-{MAX_CLIENTS}", 1))


def test_a_read_only_sample_does_not_move_the_reported_mass(shard) -> None:
    with StoreClient([shard.address]) as client:
        client.update(np.arange(N), np.random.default_rng(0).random(N) * 1e-3 + 1e-7)
        before = client.stats().total_mass
        client.sample(100, seed=3)
        assert client.stats().total_mass == before


# -- no acknowledged update lost, no failed write applied ------------------------------


def _limited_store(args: list[str], limit: int) -> subprocess.Popen:
    """A store process whose files may not grow past ``limit`` bytes (a full disk)."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "isloader.cli", "store", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit_files,
    )


def test_a_failed_log_write_applies_nothing_and_its_retry_is_applied_durably(tmp_path) -> None:
    port = free_port()
    args = [
        "--range",
        f"0:{N}",
        "--port",
        str(port),
        "--alpha",
        "0",
        "--wal-dir",
        str(tmp_path / "wal"),
        "--snapshot-uri",
        str(tmp_path / "snap"),
    ]
    proc = _limited_store(args, limit=6000)  # each log file fills up after ~6 KB
    address = f"127.0.0.1:{port}"
    stub = _raw(address)
    grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=60)
    acknowledged = np.ones(N)
    try:
        failed = None
        for seq in range(1, 200):
            idx = np.arange(seq % 20 * 10, seq % 20 * 10 + 10)
            request = pb.UpdateRequest(
                indices=idx.astype("<i8").tobytes(),
                values=np.full(10, seq + 1.0).tobytes(),
                client_id="c",
                seq=seq,
            )
            try:
                assert stub.Update(request, timeout=10).applied
            except grpc.RpcError as exc:
                failed = (request, idx, exc)
                break
            acknowledged[idx] = seq + 1.0
        assert failed is not None, "the file-size limit never bit"
        request, idx, exc = failed
        assert exc.code() == grpc.StatusCode.UNAVAILABLE and "log" in exc.details()
        assert _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        lookup = stub.Lookup(pb.LookupRequest(indices=np.arange(N).astype("<i8").tobytes()))
        np.testing.assert_array_equal(np.frombuffer(lookup.q, "<f8"), acknowledged)  # unapplied
        assert stub.Update(request, timeout=10).applied  # the retry is applied, in a new segment
        acknowledged[idx] = request.seq + 1.0
        assert _health(address) == health_pb2.HealthCheckResponse.SERVING
        assert not stub.Update(request, timeout=10).applied  # and now it is a duplicate
    finally:
        proc.kill()  # kill -9: only the log can tell
        proc.wait(10)
    restarted = StoreProcess(args)
    try:
        with StoreClient([restarted.address]) as client:
            np.testing.assert_array_equal(client.lookup(np.arange(N)), acknowledged)
    finally:
        restarted.stop()


def test_a_failed_log_roll_keeps_writes_working(tmp_path) -> None:
    shard = StoreShard(
        TableConfig(0, N, alpha=0.0),
        Durability(snapshot_uri=str(tmp_path / "snap"), wal_dir=str(tmp_path / "wal")),
    )
    segment = shard._wal.segment
    (tmp_path / "wal" / f"wal-{segment + 1:08d}.log").mkdir()  # the next segment cannot open
    shard.update(np.array([1]), np.array([0.5]), "c", 1)
    with pytest.raises(StoreNotWritableError):
        shard.snapshot()
    shard.update(np.array([2]), np.array([0.25]), "c", 2)  # still logging, same segment
    assert shard.writable
    shard.close()
    (tmp_path / "wal" / f"wal-{segment + 1:08d}.log").rmdir()
    again = StoreShard(
        TableConfig(0, N, alpha=0.0),
        Durability(snapshot_uri=str(tmp_path / "snap"), wal_dir=str(tmp_path / "wal")),
    )
    np.testing.assert_array_equal(again.importance(np.array([1, 2])), [0.5, 0.25])
    again.close()


def _durable_shard(tmp_path: Path) -> StoreShard:
    return StoreShard(
        TableConfig(0, N, alpha=0.0),
        Durability(snapshot_uri=str(tmp_path / "snap"), wal_dir=str(tmp_path / "wal")),
    )


def test_a_missing_newest_snapshot_marker_stops_start_up_instead_of_losing_updates(
    tmp_path,
) -> None:
    shard = _durable_shard(tmp_path)
    for seq in range(1, 4):  # three snapshots: the log keeps segments back to the oldest kept
        shard.update(np.array([seq]), np.array([float(seq)]), "c", seq)
        shard.snapshot()
    shard.update(np.array([9]), np.array([9.0]), "c", 9)
    shard.close()
    markers = sorted((tmp_path / "snap").glob("*.complete"))
    markers[-1].unlink()  # the newest snapshot is no longer complete
    (tmp_path / "snap" / markers[0].name).write_text("garbage, not json")
    with pytest.raises(SnapshotError, match=r"complete|log"):
        _durable_shard(tmp_path)


def test_a_corrupt_newest_snapshot_falls_back_where_the_log_covers_the_gap(tmp_path) -> None:
    shard = _durable_shard(tmp_path)
    shard.update(np.array([1]), np.array([1.0]), "c", 1)
    shard.snapshot()
    shard.update(np.array([2]), np.array([2.0]), "c", 2)
    shard.snapshot()
    shard.update(np.array([3]), np.array([3.0]), "c", 3)
    shard.close()
    newest = sorted((tmp_path / "snap").glob("*.npz"))[-1]
    newest.write_bytes(b"\0" * 100)  # damaged data behind an intact marker
    restored = _durable_shard(tmp_path)  # older snapshot + the log since it
    np.testing.assert_array_equal(restored.importance(np.array([1, 2, 3])), [1.0, 2.0, 3.0])
    restored.close()


# -- clients that ride out restarts and never block or lose updates ---------------------


def test_a_client_started_before_its_shard_waits_for_it(tmp_path) -> None:
    port = free_port()
    args = ["--num-samples", str(N), "--port", str(port)]
    holder = {}

    def connect() -> None:
        holder["client"] = StoreClient([f"127.0.0.1:{port}"], retry_budget=20)

    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(1.0)
    proc = StoreProcess(args)
    try:
        thread.join(30)
        assert holder["client"].num_samples == N
        holder["client"].close()
    finally:
        proc.stop()


def test_calls_during_a_restart_succeed_and_async_updates_are_not_lost(tmp_path) -> None:
    port = free_port()
    args = [
        "--num-samples",
        str(N),
        "--port",
        str(port),
        "--alpha",
        "0",
        "--wal-dir",
        str(tmp_path / "wal"),
    ]
    proc = StoreProcess(args)
    client = StoreClient([f"127.0.0.1:{port}"], retry_budget=15)
    try:
        proc.kill()
        for i in range(20):  # queued while the shard is down: returns at once
            start = time.monotonic()
            client.update(np.array([i]), np.array([i + 1.0]), wait=False)
            assert time.monotonic() - start < 0.5
        threading.Timer(0.5, proc.start).start()
        assert client.stats().num_samples == N  # waits out the restart
        client.flush()
        np.testing.assert_array_equal(client.lookup(np.arange(20)), np.arange(20) + 1.0)
    finally:
        client.close()
        proc.stop()
    assert not any(t.name == "isloader-send" and t.is_alive() for t in threading.enumerate())


def test_close_releases_everything_even_with_a_pending_failure() -> None:
    proc = StoreProcess(["--num-samples", str(N), "--port", "0"])
    client = StoreClient([proc.address], retry_budget=0.2, timeout=0.5)
    proc.kill()
    client.update(np.array([1]), np.array([1.0]), wait=False)
    with pytest.raises(StoreUnavailableError):
        client.close()
    assert not any(t.name == "isloader-send" and t.is_alive() for t in threading.enumerate())
    proc.stop()


def test_a_hung_shard_never_blocks_an_async_update() -> None:
    proc = StoreProcess(["--num-samples", str(N), "--port", "0"])
    client = StoreClient([proc.address], retry_budget=1, timeout=0.5)
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        for i in range(10):
            client.update(np.array([i]), np.array([1.0]), wait=False)
        assert time.monotonic() - start < 1.0
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    client.flush()
    client.close()
    proc.stop()


# -- operators ------------------------------------------------------------------------


def test_auth_failures_are_counted_and_world_readable_token_files_warned(tmp_path) -> None:
    import urllib.request

    token = tmp_path / "token"
    token.write_text("s3cret")
    token.chmod(0o644)
    proc = StoreProcess(
        [
            "--num-samples",
            "10",
            "--port",
            "0",
            "--token-file",
            str(token),
            "--metrics-port",
            str(free_port()),
        ]
    )
    try:
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                StoreClient([proc.address], token="wrong", retry_budget=0)
        metrics_port = proc.args[proc.args.index("--metrics-port") + 1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        line = next(x for x in text.splitlines() if x.startswith("isloader_auth_failures_total"))
        assert float(line.split()[-1]) >= 3
    finally:
        proc.stop()
    assert "readable by group or others" in "".join(proc.output)


def test_store_health_presents_a_client_certificate_for_mtls(tmp_path) -> None:
    from isloader.cli import main
    from tests.store.certs import write_certs

    certs = write_certs(tmp_path)
    proc = StoreProcess(
        [
            "--num-samples",
            "10",
            "--port",
            "0",
            "--tls-cert",
            certs["server"],
            "--tls-key",
            certs["server_key"],
            "--tls-client-ca",
            certs["ca"],
        ]
    )
    try:
        assert (
            main(
                [
                    "store",
                    "health",
                    proc.address,
                    "--tls-ca",
                    certs["ca"],
                    "--tls-cert",
                    certs["client"],
                    "--tls-key",
                    certs["client_key"],
                ]
            )
            == 0
        )
        assert main(["store", "health", proc.address, "--tls-ca", certs["ca"]]) == 1
    finally:
        proc.stop()


def test_snapshot_markers_that_are_garbage_are_named(tmp_path) -> None:
    from isloader.store.snapshot import read_latest_snapshot

    table = ImportanceTable(TableConfig(0, 10))
    save_table(table, str(tmp_path))
    (next(tmp_path.glob("*.complete"))).write_text(json.dumps({"sha": 1}))
    with pytest.raises(SnapshotError, match="not a completion marker"):
        read_latest_snapshot(str(tmp_path))
    with pytest.raises(MessageTooLargeError):
        table.sample(MAX_SAMPLE + 1, np.random.default_rng(0))


def test_readmit_without_an_epoch_is_never_sent_twice(shard) -> None:
    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "dropped"

    with StoreClient([shard.address], retry_budget=5) as client:
        stub = client._shards[0].stub
        calls = {"readmit": 0}
        real = stub.Readmit

        def flaky(request, **kwargs):
            calls["readmit"] += 1
            if calls["readmit"] in (1, 2):  # the first attempt of each call fails
                raise Unavailable()
            return real(request, **kwargs)

        stub.Readmit = flaky
        with pytest.raises(StoreUnavailableError):
            client.readmit(0.5, seed=1)  # not idempotent: the error, not a second call
        assert calls["readmit"] == 1
        assert client.readmit(0.5, seed=1, epoch=3) == 0  # with an epoch: retried, applied once
        assert calls["readmit"] == 3
