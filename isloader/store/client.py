"""``StoreClient``: the sharded importance store seen as one.

Each shard owns a contiguous index range; the client learns the ranges from the
shards themselves (one ``Stats`` call each) and checks they tile ``[0, N)``.

Sampling is hierarchical and exactly the global distribution, in one parallel round:
shard ``s`` draws a margin over its expected share of the ``count`` draws (under the
masses this client last saw) within itself with ``q_i / M_s``, and its reply carries
``M_s`` at draw time. The client then splits ``count`` multinomially with
probabilities ``M_s / sum_t M_t`` from those same replies and keeps each shard's first
``c_s`` draws (a shard that drew too few, because its mass grew meanwhile, draws the
rest in a second call). The probability of drawing ``i`` is
``(M_s / sum M) * (q_i / M_s)``, and that product, not an idealised ``q_i / sum q``,
is what the weights use, so they stay unbiased even when another trainer's update
lands between calls.

Locality-aware draws need the split before the shards draw (it sets each shard's
units), so they first settle the masses in a cheap parallel round: shard ``s`` gets
its multinomial share ``c_s`` of the window and ``G_s = max(1, round(G c_s / count))``
units; inside a shard every draw has ``q_i / M_s``, so the product is again
``q_i / sum q``. A unit that straddles two shards is two pieces, one per shard, each
read from the same unit. Layouts are registered with each shard on first use (and
again after a shard restart forgets them).

Updates carry ``(client_id, seq)``, so a call retried after UNAVAILABLE is applied
once; a shard acknowledges an update only once it is durable. Calls wait for a shard
to be reachable and are retried with jittered backoff within ``retry_budget``
seconds (``isloader.retry``), which rides out a shard restart; a call that is not
idempotent (``readmit`` without an epoch) is not retried. The parts of a sharded
update are retried each to completion, with the same seq. ``update(..., wait=False)``
goes through a ``BackgroundSender`` (its seq is fixed when queued, so a retry after a
failure is recognised); ``flush()`` waits for it and raises the first failure, which
stays queued.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.errors import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    StoreUnavailableError,
    UnknownLayoutError,
)
from isloader.retry import RetryPolicy
from isloader.sender import BackgroundSender
from isloader.store.api import Seed, seed_sequence
from isloader.store.limits import MAX_SAMPLE, check_count, check_end_epoch, check_values
from isloader.store.records import Plan, ShardView, TableStats, UnitLayout, UnitStats
from isloader.store.status import error_for
from isloader.store.table import prune_threshold
from isloader.store.wire import decode_array

__all__ = ["StoreClient", "StoreConnection", "TlsConfig"]

# CANCELLED: a shard shutting down (SIGTERM) cancels the calls it was serving
_RETRY = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


@dataclass(frozen=True)
class TlsConfig:
    """PEM file paths: the CA that signed the servers, and for mTLS a client pair."""

    ca_cert: str
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None  # override the name checked in the server certificate

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the PEM files (the client pair only for mTLS)."""

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            read(self.ca_cert), read(self.client_key), read(self.client_cert)
        )


@dataclass(frozen=True)
class StoreConnection:
    """How to reach a store: what a process other than the trainer needs to connect."""

    addresses: tuple[str, ...]
    token: str | None = None
    tls: TlsConfig | None = None

    def connect(self) -> StoreClient:
        """A new ``StoreClient`` to these addresses (in the calling process)."""
        return StoreClient(list(self.addresses), token=self.token, tls=self.tls)


@dataclass
class _Shard:
    address: str
    stub: store_pb2_grpc.ImportanceStoreStub
    channel: grpc.Channel
    start: int = 0
    stop: int = 0
    view: ShardView = field(default_factory=lambda: ShardView(0.0, 0))
    layouts: set[str] = field(default_factory=set)


class StoreClient:
    """One client over ``S`` store shards; see the module docstring.

    Args:
        addresses: ``host:port`` of every shard, any order.
        token: bearer token, when the shards require one.
        tls: ``TlsConfig`` for TLS / mTLS; plaintext when None.
        timeout: deadline of each attempt in seconds (default 10).
        retry_budget: seconds to keep retrying a call that found its shard unavailable
            (default 10: a restarting shard is back well within it).
        max_pending: bound of the fire-and-forget queue (default 64 requests).
        put_timeout: longest ``update(wait=False)`` waits for room in a full queue before
            raising (default 30 s).

    Raises:
        InvalidArgumentError: no address, or shards that do not tile ``[0, N)``.
        StoreUnavailableError: a shard unreachable within the retry budget.
    """

    def __init__(
        self,
        addresses: Sequence[str] | str,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float = 10.0,
        retry_budget: float = 10.0,
        max_pending: int = 64,
        put_timeout: float = 30.0,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [a for a in addresses.split(",") if a]
        if not addresses:
            raise InvalidArgumentError("StoreClient needs at least one shard address")
        self._args = (list(addresses), token, tls, timeout, retry_budget, max_pending, put_timeout)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retry = RetryPolicy(budget=retry_budget, base=0.05, cap=1.0)
        self._client_id = uuid.uuid4().hex
        self._seq = 0
        self._lock = threading.Lock()
        options = [("grpc.max_receive_message_length", 256 << 20)]
        shards: list[_Shard] = []
        self._pool = ThreadPoolExecutor(max(len(addresses), 1), thread_name_prefix="isloader-rpc")
        try:
            for address in addresses:
                channel = (
                    grpc.secure_channel(address, tls.credentials(), options)
                    if tls
                    else grpc.insecure_channel(address, options)
                )
                stub = store_pb2_grpc.ImportanceStoreStub(channel)
                shards.append(_Shard(address, stub, channel))
            infos = self._all(shards, "Stats", lambda s: pb.StatsRequest())
            for shard, info in zip(shards, infos, strict=True):
                shard.start, shard.stop = info.shard.start, info.shard.stop
                shard.view = ShardView(info.shard.total_mass, info.shard.active_count)
            self._shards = sorted(shards, key=lambda s: s.start)
            self._check_tiling([json.loads(i.shard.config_json or "{}") for i in infos])
        except BaseException:  # nothing is left behind by a client that never was
            self._pool.shutdown(wait=True)
            for shard in shards:
                shard.channel.close()
            raise
        self._stops = np.array([s.stop for s in self._shards], dtype=np.int64)
        self._max_pending = max_pending
        self._put_timeout = put_timeout
        self._sender: BackgroundSender[tuple[np.ndarray, np.ndarray, int]] | None = None

    def __reduce__(self) -> tuple[Callable[..., StoreClient], tuple[Any, ...]]:
        """Ray ships the client to read tasks by its arguments; the copy reconnects."""
        return _rebuild, self._args

    @property
    def num_samples(self) -> int:
        """N: the end of the last shard's index range."""
        return int(self._shards[-1].stop)

    @property
    def addresses(self) -> list[str]:
        """The shards' ``host:port``, in index order."""
        return [s.address for s in self._shards]

    @property
    def connection(self) -> StoreConnection:
        """What a Ray read task needs to reach the same shards."""
        _, token, tls, *_ = self._args
        return StoreConnection(tuple(self.addresses), token, tls)

    # -- updates ---------------------------------------------------------------

    def update(self, indices: np.ndarray, values: np.ndarray, *, wait: bool = True) -> None:
        """Eq. 8 for each index, on the shards that own them.

        The request id ``(client_id, seq)`` is fixed here; every retry carries it, so a
        shard applies the update once. ``wait=False`` queues it for the client's sender
        thread and returns at once while fewer than ``max_pending`` updates are queued;
        with that many queued (the store slower than the caller, or down) it waits up to
        ``put_timeout`` seconds for room, then raises without queueing. Nothing queued is
        dropped: a failure stays queued and ``flush`` sends it again.

        Raises:
            InvalidArgumentError, IndexOutOfRangeError: bad input (nothing is sent).
            StoreUnavailableError: a shard stayed unreachable for the retry budget (with
                ``wait=False``: raised by a later ``update`` or ``flush``), or no room in
                the queue within ``put_timeout``.
        """
        indices, values = self._validate(indices, values)
        seq = self._next_seq()
        if wait:
            self._send_update(indices, values, seq)
            return
        if self._sender is None:
            self._sender = BackgroundSender(
                self._send_queued, max_pending=self._max_pending,
                put_timeout=self._put_timeout, name="isloader-send",
            )  # fmt: skip
        self._sender.submit((indices, values, seq))

    def flush(self) -> None:
        """Return once every queued update is acknowledged; raises the first failure
        (the failed update stays queued, and the next ``flush`` sends it again)."""
        if self._sender is not None:
            self._sender.flush()

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _send_queued(self, batch: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
        for indices, values, seq in batch:
            self._send_update(indices, values, seq)

    def _send_update(self, indices: np.ndarray, values: np.ndarray, seq: int) -> None:
        """Each shard's part, with the same seq, retried to completion (idempotent)."""
        owner = np.searchsorted(self._stops, indices, side="right")
        jobs = []
        for s in np.unique(owner):
            mask = owner == s
            request = pb.UpdateRequest(
                indices=indices[mask].astype("<i8").tobytes(),
                values=values[mask].astype("<f8").tobytes(),
                client_id=self._client_id,
                seq=seq,
            )
            jobs.append((self._shards[s], request))
        self._map(jobs, "Update")

    def _validate(self, indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reject bad input before anything is sent, so no shard applies half of it."""
        idx = np.asarray(indices)
        val = np.asarray(values, dtype=np.float64)
        if idx.ndim != 1 or val.ndim != 1 or idx.shape != val.shape:
            raise InvalidArgumentError(f"indices {idx.shape} and values {val.shape} must match")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise InvalidArgumentError(f"indices must be integers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise IndexOutOfRangeError(f"indices must be in [0, {self.num_samples})")
        check_values("values", val)
        return idx.astype(np.int64, copy=False), val

    # -- sampling --------------------------------------------------------------

    def sample(
        self, count: int, seed: Seed, *, layout: UnitLayout | None = None, units: int = 0
    ) -> Plan:
        """Draw ``count`` indices from the global ``p`` across the shards in one round
        (locality-aware: per-shard units split by mass); see ``ImportanceStore.sample`` for
        what it raises.
        """
        count = check_count("sample count", count, MAX_SAMPLE)
        rng = np.random.default_rng(seed_sequence(seed))
        if layout is not None and units:
            return self._sample_units(count, rng, layout, units)
        return self._sample_one_round(count, rng)

    def _sample_one_round(self, count: int, rng: np.random.Generator) -> Plan:
        """Draws in one parallel round: every shard draws a little more than its expected
        share under the masses last seen, and its reply carries its mass at draw time.
        The split over shards is then drawn from those exact masses and each shard's
        first ``k_s`` draws are kept (i.i.d. in-shard draws, so any prefix is one). A
        shard asked for too few (its mass grew meanwhile) draws the rest in a second
        call; with the margin below that is rare."""
        known = np.array([s.view.total_mass for s in self._shards])
        share = known / known.sum() if known.sum() > 0 else np.full(len(known), 1 / len(known))
        expect = count * share
        ask = np.minimum(count, np.ceil(expect + 4 * np.sqrt(expect * (1 - share)) + 8))
        ask[share == 0] = 0  # a shard seen empty only reports its mass (it may have grown)
        seeds = rng.integers(0, 2**63, size=(2, len(self._shards)))
        try:
            draws = self._draw(self._shards, ask, seeds[0])
        except InvalidArgumentError:  # a shard emptied since its mass was seen: settle, retry
            self._all(self._shards, "Lookup", lambda s: pb.LookupRequest())
            fresh = np.array([s.view.total_mass for s in self._shards])
            draws = self._draw(self._shards, np.where(fresh > 0, ask, 0), seeds[0])
        masses = np.array([mass for _, _, mass in draws])
        if masses.sum() <= 0:
            raise InvalidArgumentError("the store has no sampling mass; call end_epoch with eps>0")
        counts = rng.multinomial(count, masses / masses.sum())
        short = [i for i, (c, (idx, _, _)) in enumerate(zip(counts, draws, strict=True))
                 if c > len(idx)]  # fmt: skip
        more = self._draw(
            [self._shards[i] for i in short],
            [counts[i] - len(draws[i][0]) for i in short],
            seeds[1][short],
        )
        for i, (idx, q, mass) in zip(short, more, strict=True):  # q relative to each reply's mass
            first_idx, first_q, first_mass = draws[i]
            draws[i] = (np.concatenate([first_idx, idx]),
                        np.concatenate([first_q, q * first_mass / mass]), first_mass)  # fmt: skip
        indices = [idx[:c] for (idx, _, _), c in zip(draws, counts, strict=True)]
        probabilities = [q[:c] / masses.sum() for (_, q, _), c in zip(draws, counts, strict=True)]
        return self._plan(indices, probabilities, count, rng)

    def _draw(
        self, shards: list[_Shard], counts, seeds
    ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """``(indices, q, shard mass)`` per shard; a count of 0 returns the mass only."""
        jobs = [(shard, pb.SampleRequest(count=int(c), seed=int(seed)))
                for shard, c, seed in zip(shards, counts, seeds, strict=True)]  # fmt: skip
        return [
            (
                decode_array(reply.indices, "<i8", "indices"),
                decode_array(reply.q, "<f8", "q"),
                reply.shard.total_mass,
            )
            for reply in self._map(jobs, "Sample")
        ]

    def _plan(self, indices: list, probabilities: list, count: int, rng) -> Plan:
        """Shards' draws in a random order, with weights ``1 / (N_active p)``."""
        order = rng.permutation(count)
        idx = np.concatenate(indices)[order] if indices else np.zeros(0, np.int64)
        p = np.concatenate(probabilities)[order] if probabilities else np.zeros(0)
        active = sum(s.view.active_count for s in self._shards)
        return Plan(idx.astype(np.int64), p, 1.0 / (active * p))

    def _sample_units(
        self, count: int, rng: np.random.Generator, layout: UnitLayout, units: int
    ) -> Plan:
        """Locality-aware draws: the split over shards must be known before the shards
        draw (it sets each shard's share of the ``units`` per window), so a cheap parallel
        round first settles the masses the last update replies carried."""
        if len(self._shards) > 1:
            self._all(self._shards, "Lookup", lambda s: pb.LookupRequest())
        masses = np.array([s.view.total_mass for s in self._shards])
        if masses.sum() <= 0:
            raise InvalidArgumentError("the store has no sampling mass; call end_epoch with eps>0")
        counts = rng.multinomial(count, masses / masses.sum())
        seeds = rng.integers(0, 2**63, size=len(self._shards))
        jobs = []
        for shard, c, shard_seed in zip(self._shards, counts, seeds, strict=True):
            if not c:
                continue
            self._register(shard, layout)
            request = pb.SampleRequest(count=int(c), seed=int(shard_seed), layout=layout.name)
            request.units_per_window = max(1, round(units * int(c) / count))
            jobs.append((shard, request))
        replies = self._map_layout(jobs, "Sample", layout)
        indices, probabilities = [], []
        share = masses / masses.sum()
        for (shard, _), reply in zip(jobs, replies, strict=True):
            s = self._shards.index(shard)
            indices.append(decode_array(reply.indices, "<i8", "indices"))
            q = decode_array(reply.q, "<f8", "q")
            probabilities.append(share[s] * q / reply.shard.total_mass)
        return self._plan(indices, probabilities, count, rng)

    def unit_stats(self, layout: UnitLayout) -> UnitStats:
        """Per-unit mass and active rows over the whole store, and every pruned flag."""
        for shard in self._shards:
            self._register(shard, layout)
        jobs = [(s, pb.UnitsRequest(layout=layout.name)) for s in self._shards]
        mass, active = np.zeros(len(layout)), np.zeros(len(layout), dtype=np.int64)
        pruned = np.zeros(self.num_samples, dtype=np.bool_)
        for (shard, _), reply in zip(jobs, self._map_layout(jobs, "Units", layout), strict=True):
            m = decode_array(reply.mass, "<f8", "mass")
            units = slice(reply.first_unit, reply.first_unit + len(m))
            mass[units] += m  # a straddling unit sums its pieces
            active[units] += decode_array(reply.active, "<i8", "active")
            bits = np.unpackbits(np.frombuffer(reply.pruned, np.uint8))
            pruned[shard.start : shard.stop] = bits[: shard.stop - shard.start].astype(bool)
        return UnitStats(0, mass, active, pruned)

    def _register(self, shard: _Shard, layout: UnitLayout, *, again: bool = False) -> None:
        if layout.name in shard.layouts and not again:
            return
        bounds = np.ascontiguousarray(layout.bounds, dtype="<i8").tobytes()
        self._call(shard, pb.SetLayoutRequest(layout=layout.name, bounds=bounds), "SetLayout")
        shard.layouts.add(layout.name)

    def _map_layout(
        self, jobs: list[tuple[_Shard, Any]], method: str, layout: UnitLayout | None
    ) -> list:
        """``_map``, registering the layout again with shards that forgot it (a restart)."""
        try:
            return self._map(jobs, method)
        except UnknownLayoutError:
            if layout is None:
                raise
            for shard, _ in jobs:
                self._register(shard, layout, again=True)
            return self._map(jobs, method)

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` of ``indices``, asked of the shards that own them."""
        idx, _ = self._validate(indices, np.zeros(len(indices)))
        owner = np.searchsorted(self._stops, idx, side="right")
        out = np.empty(len(idx))
        jobs = [
            (self._shards[s], pb.LookupRequest(indices=idx[owner == s].astype("<i8").tobytes()))
            for s in np.unique(owner)
        ]
        for (shard, _), reply in zip(jobs, self._map(jobs, "Lookup"), strict=True):
            out[owner == self._shards.index(shard)] = decode_array(reply.q, "<f8", "q")
        return out

    # -- epoch-level operations --------------------------------------------------

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """``q += eps`` on every shard, once per epoch number; returns whether any shard
        applied it (a retry after a partial failure completes the rest). The bounds are
        checked against every shard first, so no shard applies what another refuses."""
        shards = self._all(self._shards, "Stats", lambda s: pb.StatsRequest())
        top = max((r.q_max for r in shards if r.shard.active_count), default=0.0)
        check_end_epoch(epoch, eps, top, max(r.shard.epoch for r in shards))
        replies = self._all(
            self._shards, "EndEpoch", lambda s: pb.EndEpochRequest(epoch=epoch, eps=eps)
        )
        return any(r.applied for r in replies)

    def prune(self, k: float, *, epoch: int | None = None) -> int:
        """Alg. 2 with the global threshold from fresh totals of every shard; returns how
        many samples the shards pruned."""
        self._all(self._shards, "Stats", lambda s: pb.StatsRequest())  # fresh masses
        total = sum(s.view.total_mass for s in self._shards)
        active = sum(s.view.active_count for s in self._shards)
        threshold = prune_threshold(total, active, k)
        replies = self._all(
            self._shards, "Prune", lambda s: pb.PruneRequest(threshold=threshold, epoch=epoch)
        )
        return sum(r.pruned for r in replies)

    def readmit(self, fraction: float, *, seed: Seed = 0, epoch: int | None = None) -> int:
        """Readmit a random share of pruned samples on every shard (a seed each);
        without an epoch number it is sent once, never retried."""
        seeds = seed_sequence(seed).generate_state(len(self._shards), dtype=np.uint64)
        seed_of = {id(s): int(x) for s, x in zip(self._shards, seeds, strict=True)}
        jobs = [
            (s, pb.ReadmitRequest(fraction=fraction, seed=seed_of[id(s)], epoch=epoch))
            for s in self._shards
        ]
        # without an epoch number a readmit is not idempotent: never sent twice
        replies = self._map(jobs, "Readmit", retry=epoch is not None)
        return sum(r.readmitted for r in replies)

    def reset(self) -> None:
        """Forget every measurement on every shard."""
        self._all(self._shards, "Reset", lambda s: pb.ResetRequest())

    def stats(self) -> TableStats:
        """Summed over shards; histograms add up (shards share fixed bin edges)."""
        replies = self._all(self._shards, "Stats", lambda s: pb.StatsRequest())
        edges = {tuple(r.histogram_edges) for r in replies}
        counts = np.sum([list(r.histogram) for r in replies], axis=0) if len(edges) == 1 else ()
        return TableStats(
            num_samples=sum(r.num_samples for r in replies),
            active=sum(r.shard.active_count for r in replies),
            seen=sum(r.seen for r in replies),
            pruned=sum(r.pruned for r in replies),
            total_mass=sum(r.shard.total_mass for r in replies),
            sum_sq=sum(r.sum_sq for r in replies),
            q_min=min(r.q_min for r in replies),
            q_max=max(r.q_max for r in replies),
            epoch=min(r.shard.epoch for r in replies),
            version=sum(r.shard.version for r in replies),
            histogram=tuple(int(c) for c in counts),
            histogram_edges=next(iter(edges)) if len(edges) == 1 else (),
        )

    def snapshot(self) -> list[str]:
        """Ask every shard for a snapshot; returns the paths written (shards without a
        snapshot location write none). Raises ``SnapshotError`` when one fails."""
        replies = self._all(self._shards, "Snapshot", lambda s: pb.SnapshotRequest())
        return [r.path for r in replies if r.path]

    def close(self) -> None:
        """Flush queued updates, then release the threads and channels (also when the
        flush fails: its error is raised after)."""
        try:
            if self._sender is not None:
                self._sender.close()
        finally:
            self._pool.shutdown(wait=True)
            for shard in self._shards:
                shard.channel.close()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- RPC plumbing ------------------------------------------------------------

    def _check_tiling(self, configs: list[dict[str, Any]]) -> None:
        position = 0
        for shard in self._shards:
            if shard.start != position:
                raise InvalidArgumentError(
                    f"shard ranges do not tile [0, N): {shard.address} starts at {shard.start}, "
                    f"expected {position}"
                )
            position = shard.stop
        if any(c != configs[0] for c in configs):
            raise InvalidArgumentError(f"shards disagree on their configuration: {configs}")

    def _all(self, shards: Sequence[_Shard], method: str, make: Callable[[_Shard], Any]) -> list:
        return self._map([(s, make(s)) for s in shards], method)

    def _map(self, jobs: list[tuple[_Shard, Any]], method: str, *, retry: bool = True) -> list:
        if len(jobs) == 1:
            return [self._call(*jobs[0], method, retry=retry)]
        futures = [
            self._pool.submit(self._call, shard, req, method, retry=retry) for shard, req in jobs
        ]
        return [f.result() for f in futures]

    def _call(self, shard: _Shard, request: Any, method: str, *, retry: bool = True) -> Any:
        """One RPC: waits for the shard to be reachable, retried within the budget while
        it is unavailable (UNAVAILABLE, DEADLINE_EXCEEDED) when ``retry``.

        Raises:
            StoreUnavailableError: still unavailable when the budget ran out.
            The error of the reply's status otherwise (``status.error_for``).
        """
        stub = getattr(shard.stub, method)

        def attempt() -> Any:
            return stub(
                request, timeout=self._timeout, metadata=self._metadata, wait_for_ready=True
            )

        try:
            reply = self._retry.call(attempt, _transient) if retry else attempt()
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code in _RETRY:
                raise StoreUnavailableError(
                    f"store shard {shard.address} unavailable ({code.name}: {details})"
                ) from None
            raise error_for(code, f"{shard.address}: {details}") from None
        shard.view = ShardView(reply.shard.total_mass, reply.shard.active_count)
        return reply


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in _RETRY


def _rebuild(*args: Any) -> StoreClient:
    addresses, token, tls, timeout, retry_budget, max_pending, put_timeout = args
    return StoreClient(
        addresses, token=token, tls=tls, timeout=timeout, retry_budget=retry_budget,
        max_pending=max_pending, put_timeout=put_timeout,
    )  # fmt: skip
