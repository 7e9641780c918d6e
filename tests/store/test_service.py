"""The store as a service: real ``isloader store serve`` processes on 127.0.0.1."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.errors import AuthenticationError, StoreUnavailableError
from isloader.store.client import StoreClient, TlsConfig
from tests.helpers import StoreProcess, chi_square_pvalue, start_shards
from tests.store.certs import write_certs

N = 120


@pytest.fixture()
def three_shards():
    procs = start_shards(N, 3)
    yield procs
    for p in procs:
        p.stop()


def test_three_shard_processes_sample_the_exact_global_distribution(three_shards) -> None:
    with StoreClient([p.address for p in three_shards]) as client:
        q = np.random.default_rng(0).gamma(0.5, 1.0, N)
        client.update(np.arange(N), q)
        plan = client.sample(150_000, seed=11)
        assert chi_square_pvalue(plan.indices, q / q.sum()) > 1e-3
        np.testing.assert_allclose(plan.weights, q.sum() / (N * q[plan.indices]), rtol=1e-9)

        pruned = q <= q.sum() / (1.5 * N)
        assert client.prune(1.5, epoch=1) == pruned.sum()
        live = np.where(pruned, 0.0, q)
        plan = client.sample(150_000, seed=12)
        assert chi_square_pvalue(plan.indices, live / live.sum()) > 1e-3
        n_active = N - pruned.sum()
        np.testing.assert_allclose(plan.weights, live.sum() / (n_active * q[plan.indices]))

        back = client.readmit(0.5, seed=1, epoch=1)
        current = client.lookup(np.arange(N))  # pruned: 0; readmitted: their shard's mean
        assert (pruned & (current > 0)).sum() == back > 0
        assert client.stats().active == n_active + back
        plan = client.sample(150_000, seed=13)
        assert chi_square_pvalue(plan.indices, current / current.sum()) > 1e-3


def test_one_round_draws_stay_exact_when_the_masses_seen_are_stale(three_shards) -> None:
    """Draws take one round: each shard draws a margin over its share under the masses
    this client last saw, and the split uses the masses in the same replies. Another
    client moving most of the mass to one shard makes those shares wrong; the shard
    asked for too few tops up, and the draws still follow the exact global p."""
    addresses = [p.address for p in three_shards]
    with StoreClient(addresses) as client, StoreClient(addresses) as other:
        q = np.ones(N)
        client.update(np.arange(N), q)
        client.sample(10, seed=0)  # this client now believes each shard holds a third
        q[: N // 3] = 50.0  # shard 0 now holds most of the mass (after the EMA)
        other.update(np.arange(N), q)
        q = other.lookup(np.arange(N))  # asked of the other client: this one stays stale
        assert q[: N // 3].sum() > 0.9 * q.sum()
        plan = client.sample(60_000, seed=1)
        assert chi_square_pvalue(plan.indices, q / q.sum()) > 1e-3
        np.testing.assert_allclose(plan.weights, q.sum() / (N * q[plan.indices]), rtol=1e-9)
        assert client.sample(0, seed=2).indices.shape == (0,)


def test_shards_histograms_add_up_to_the_global_one(three_shards) -> None:
    """Shards bin q on the same fixed log-spaced edges, so the client's sum is exact."""
    with StoreClient([p.address for p in three_shards]) as client:
        q = np.exp(np.random.default_rng(3).normal(0.0, 3.0, N))  # spans several decades
        client.update(np.arange(N), q)
        stats = client.stats()
        edges = np.array(stats.histogram_edges)
        assert edges[0] == 1e-4 and edges[-1] == 1e4 and len(edges) == 41
        expected, _ = np.histogram(np.clip(q, edges[0], edges[-1]), bins=edges)
        assert list(stats.histogram) == expected.tolist()


def _stub(address: str) -> tuple[grpc.Channel, store_pb2_grpc.ImportanceStoreStub]:
    channel = grpc.insecure_channel(address)
    return channel, store_pb2_grpc.ImportanceStoreStub(channel)


def _raw(idx, dtype="<i8") -> bytes:
    return np.asarray(idx, dtype=dtype).tobytes()


@pytest.fixture(scope="module")
def small_limit_shard():
    proc = StoreProcess(["--num-samples", "100", "--port", "0", "--max-message-mb", "0.01"])
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("indices", "values", "code"),
    [
        (_raw([1, 2]), _raw([1.0, np.nan], "<f8"), grpc.StatusCode.INVALID_ARGUMENT),
        (_raw([1, 2]), _raw([1.0, np.inf], "<f8"), grpc.StatusCode.INVALID_ARGUMENT),
        (_raw([1, 2]), _raw([1.0, -1.0], "<f8"), grpc.StatusCode.INVALID_ARGUMENT),
        (_raw([1, 2]), _raw([1.0], "<f8"), grpc.StatusCode.INVALID_ARGUMENT),
        (_raw([1, 2])[:-3], _raw([1.0, 1.0], "<f8"), grpc.StatusCode.INVALID_ARGUMENT),
        (_raw([1, 100]), _raw([1.0, 1.0], "<f8"), grpc.StatusCode.OUT_OF_RANGE),
        (
            _raw(np.arange(2000) % 100),
            _raw(np.ones(2000), "<f8"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    ],
)
def test_bad_input_over_the_wire(small_limit_shard, indices, values, code) -> None:
    channel, stub = _stub(small_limit_shard.address)
    before = stub.Stats(pb.StatsRequest())
    q_before = stub.Lookup(pb.LookupRequest(indices=_raw(np.arange(100)))).q
    with pytest.raises(grpc.RpcError) as info:
        stub.Update(pb.UpdateRequest(indices=indices, values=values, client_id="t", seq=1))
    assert info.value.code() == code
    assert info.value.details()  # says what was wrong
    assert stub.Stats(pb.StatsRequest()) == before
    assert stub.Lookup(pb.LookupRequest(indices=_raw(np.arange(100)))).q == q_before
    channel.close()


def test_retried_update_is_applied_once_and_health_and_metrics_serve(tmp_path) -> None:
    proc = StoreProcess(
        ["--num-samples", "10", "--port", "0", "--alpha", "0.5", "--metrics-port", "0"]
    )
    try:
        channel, stub = _stub(proc.address)
        request = pb.UpdateRequest(
            indices=_raw([4]), values=_raw([2.0], "<f8"), client_id="trainer-0", seq=41
        )
        assert stub.Update(request).applied
        assert not stub.Update(request).applied  # the retry
        q = np.frombuffer(stub.Lookup(pb.LookupRequest(indices=_raw([4]))).q)
        assert q[0] == 2.0
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="isloader.v1.ImportanceStore"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        proc.stop()


def test_metrics_endpoint_exports_store_gauges() -> None:
    from isloader.config import StoreSettings
    from isloader.store.server import StoreServer

    server = StoreServer(StoreSettings(num_samples=10, port=0, metrics_port=0)).start()
    try:
        with StoreClient([server.address]) as client:
            client.update(np.arange(10), np.ones(10))
            client.prune(0.5)  # threshold 2.0 > every q = 1.0
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read()
        text = text.decode()
        assert "isloader_updates_total 1.0" in text
        assert "isloader_active_samples 0.0" in text
        assert 'isloader_rpc_seconds_count{method="update"} 1.0' in text
    finally:
        server.stop(grace=0)


def test_stopped_servers_and_closed_clients_leave_no_thread_running(tmp_path) -> None:
    """Servers with every thread they can start (gRPC executor, metrics, snapshots, the
    shard's applier) and clients with their RPC pools, ten times over."""
    from isloader.config import StoreSettings
    from isloader.store.server import StoreServer

    before = {t.ident for t in threading.enumerate()}
    for round_ in range(10):
        settings = StoreSettings(num_samples=10, port=0, metrics_port=0, snapshot_interval=0.05,
                                 snapshot_uri=str(tmp_path / f"snap-{round_}"))  # fmt: skip
        server = StoreServer(settings).start()
        with StoreClient([server.address]) as client:
            client.update(np.arange(10), np.ones(10), wait=False)
            client.flush()
        server.stop(grace=0)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_token_is_required_when_configured(tmp_path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    proc = StoreProcess(
        ["--num-samples", "10", "--port", "0", "--token-file", str(tmp_path / "token")]
    )
    try:
        with pytest.raises(AuthenticationError, match="bearer token"):
            StoreClient([proc.address], retry_budget=0)
        with pytest.raises(AuthenticationError):
            StoreClient([proc.address], token="wrong", retry_budget=0)
        with StoreClient([proc.address], token="s3cret") as client:
            client.update(np.arange(10), np.ones(10))
            assert client.stats().seen == 10
        channel = grpc.insecure_channel(proc.address)  # health stays open for probes
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        proc.stop()


def test_tls_and_mutual_tls(tmp_path) -> None:
    certs = write_certs(tmp_path)
    server_tls = ["--tls-cert", certs["server"], "--tls-key", certs["server_key"]]
    proc = StoreProcess(["--num-samples", "10", "--port", "0", *server_tls])
    try:
        with StoreClient([proc.address], tls=TlsConfig(certs["ca"])) as client:
            assert client.stats().num_samples == 10
        with pytest.raises(StoreUnavailableError):
            StoreClient([proc.address], retry_budget=0, timeout=2)  # plaintext to a TLS port
    finally:
        proc.stop()
    proc = StoreProcess(
        ["--num-samples", "10", "--port", "0", *server_tls, "--tls-client-ca", certs["ca"]]
    )
    try:
        mtls = TlsConfig(certs["ca"], client_cert=certs["client"], client_key=certs["client_key"])
        with StoreClient([proc.address], tls=mtls) as client:
            assert client.stats().num_samples == 10
        with pytest.raises(StoreUnavailableError):
            StoreClient([proc.address], tls=TlsConfig(certs["ca"]), retry_budget=0, timeout=2)
    finally:
        proc.stop()


def test_kill_9_loses_no_acknowledged_update(tmp_path) -> None:
    n = 400
    args = ["--range", f"0:{n}", "--port", "0", "--alpha", "0", "--wal-dir", str(tmp_path / "wal")]
    proc = StoreProcess(args)
    acknowledged = np.full(n, 1.0)  # initial_q
    in_flight: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    stop = threading.Event()

    def stream() -> None:
        client = StoreClient([proc.address], retry_budget=0, timeout=2)
        rng = np.random.default_rng(0)
        for step in range(100_000):
            idx = (np.arange(20) + 20 * step) % n  # alpha=0: last write wins
            vals = rng.random(20)
            in_flight["update"] = (idx, vals)
            try:
                client.update(idx, vals)
            except Exception:
                return
            acknowledged[idx] = vals
            if step == 200:
                stop.set()

    writer = threading.Thread(target=stream)
    writer.start()
    assert stop.wait(60)
    proc.kill()
    writer.join(30)
    proc.start()
    try:
        with StoreClient([proc.address]) as client:
            restored = client.lookup(np.arange(n))
        idx, vals = in_flight["update"]
        maybe = acknowledged.copy()
        maybe[idx] = vals  # the unacknowledged last update may or may not be durable
        assert np.array_equal(restored, acknowledged) or np.array_equal(restored, maybe)
    finally:
        proc.stop()


def test_sigterm_writes_a_snapshot_that_the_restart_restores(tmp_path) -> None:
    args = ["--num-samples", "50", "--port", "0", "--snapshot-uri", str(tmp_path / "snap")]
    proc = StoreProcess(args, env={"ISLOADER_ALPHA": "0.25"})
    q = np.random.default_rng(5).random(50)
    with StoreClient([proc.address]) as client:
        client.update(np.arange(50), q)
        client.end_epoch(0, 0.5)
    assert proc.terminate() == 0
    proc.start()
    try:
        with StoreClient([proc.address]) as client:
            np.testing.assert_allclose(client.lookup(np.arange(50)), q + 0.5)
            assert client.stats().epoch == 1
    finally:
        proc.stop()


def test_unreachable_shard_is_named() -> None:
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1 unavailable"):
        StoreClient(["127.0.0.1:1"], retry_budget=1, timeout=0.5)
