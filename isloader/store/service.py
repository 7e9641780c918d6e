"""The gRPC servicer: decode the request, call ``StoreShard``, encode the reply."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import grpc
import numpy as np

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.errors import IsloaderError, MessageTooLargeError
from isloader.store.records import ShardView
from isloader.store.shard import StoreShard
from isloader.store.status import status_for
from isloader.store.wire import SAMPLE_REPLY_BYTES, decode_array

__all__ = ["ImportanceStoreServicer"]


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map isloader errors to their status codes; anything else is a server bug."""

    def wrapper(self: ImportanceStoreServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except IsloaderError as exc:
            context.abort(status_for(exc), str(exc))

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class ImportanceStoreServicer(store_pb2_grpc.ImportanceStoreServicer):
    """Serves one ``StoreShard``; ``max_reply_bytes`` is the largest message it may send
    (a Sample whose reply could not be sent is refused before anything is drawn)."""

    def __init__(self, shard: StoreShard, max_reply_bytes: int = 64 << 20) -> None:
        self._shard = shard
        self._max_reply = max_reply_bytes
        self._config_json = json.dumps(
            {"alpha": shard.config.alpha, "initial_q": shard.config.initial_q}
        )

    def _info(self, view: ShardView | None = None) -> pb.ShardInfo:
        view = view or self._shard.view()
        return pb.ShardInfo(
            start=self._shard.config.start,
            stop=self._shard.config.stop,
            total_mass=view.total_mass,
            active_count=view.active_count,
            version=self._shard.version,
            epoch=self._shard.epoch,
            config_json=self._config_json,
        )

    @_rpc
    def Update(self, request: pb.UpdateRequest, context: grpc.ServicerContext) -> pb.UpdateResponse:
        """Eq. 8 for the request's indices, idempotent by ``(client_id, seq)``."""
        indices = decode_array(request.indices, "<i8", "indices")
        values = decode_array(request.values, "<f8", "values")
        applied = self._shard.update(indices, values, request.client_id, request.seq)
        view = self._shard.view(settled=False)  # queued updates show in the next reply
        return pb.UpdateResponse(shard=self._info(view), applied=applied)

    @_rpc
    def Sample(self, request: pb.SampleRequest, context: grpc.ServicerContext) -> pb.SampleResponse:
        """Draws from this shard's ``p``; refused first when its reply could not be sent."""
        reply = request.count * SAMPLE_REPLY_BYTES + 4096
        if reply > self._max_reply:
            raise MessageTooLargeError(
                f"{request.count} draws need a {reply:,}-byte reply; the largest this shard "
                f"sends is {self._max_reply:,} (ask for fewer per call)"
            )
        plan, view = self._shard.sample(
            request.count,
            request.seed,
            layout=request.layout or None,
            units=request.units_per_window,
        )
        q = plan.probabilities * view.total_mass
        return pb.SampleResponse(
            shard=self._info(view),
            indices=plan.indices.astype("<i8").tobytes(),
            q=np.asarray(q, dtype="<f8").tobytes(),
        )

    @_rpc
    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> pb.LookupResponse:
        """Current ``q`` of the requested indices."""
        q = self._shard.importance(decode_array(request.indices, "<i8", "indices"))
        return pb.LookupResponse(shard=self._info(), q=q.astype("<f8").tobytes())

    @_rpc
    def SetLayout(
        self, request: pb.SetLayoutRequest, context: grpc.ServicerContext
    ) -> pb.SetLayoutResponse:
        """Register a unit layout (its bounds); returns this shard's unit count."""
        units = self._shard.set_layout(
            request.layout, decode_array(request.bounds, "<i8", "bounds")
        )
        return pb.SetLayoutResponse(shard=self._info(), units=units)

    @_rpc
    def Units(self, request: pb.UnitsRequest, context: grpc.ServicerContext) -> pb.UnitsResponse:
        """Per-unit mass, active rows and packed pruned flags of a layout."""
        stats = self._shard.unit_stats(request.layout)
        return pb.UnitsResponse(
            shard=self._info(),
            first_unit=stats.first_unit,
            mass=stats.mass.astype("<f8").tobytes(),
            active=stats.active.astype("<i8").tobytes(),
            pruned=np.packbits(stats.pruned).tobytes(),
        )

    @_rpc
    def EndEpoch(
        self, request: pb.EndEpochRequest, context: grpc.ServicerContext
    ) -> pb.EndEpochResponse:
        """``q += eps`` once per epoch number."""
        applied = self._shard.end_epoch(request.epoch, request.eps)
        return pb.EndEpochResponse(shard=self._info(), applied=applied)

    @_rpc
    def Prune(self, request: pb.PruneRequest, context: grpc.ServicerContext) -> pb.PruneResponse:
        """Alg. 2 at the client's global threshold (once per epoch when given)."""
        epoch = request.epoch if request.HasField("epoch") else None
        pruned = self._shard.prune(request.threshold, epoch)
        return pb.PruneResponse(shard=self._info(), pruned=pruned)

    @_rpc
    def Readmit(
        self, request: pb.ReadmitRequest, context: grpc.ServicerContext
    ) -> pb.ReadmitResponse:
        """Readmit a random share of pruned samples."""
        epoch = request.epoch if request.HasField("epoch") else None
        count = self._shard.readmit(request.fraction, request.seed, epoch)
        return pb.ReadmitResponse(shard=self._info(), readmitted=count)

    @_rpc
    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.ResetResponse:
        """Forget every measurement of this shard."""
        self._shard.reset()
        return pb.ResetResponse(shard=self._info())

    @_rpc
    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        """Totals and the q histogram on the shared fixed edges."""
        s = self._shard.stats()
        fields = asdict(s)
        return pb.StatsResponse(
            shard=self._info(),
            **{k: fields[k] for k in ("num_samples", "seen", "pruned", "sum_sq", "q_min", "q_max")},
            histogram=s.histogram,
            histogram_edges=s.histogram_edges,
        )

    @_rpc
    def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.ServicerContext
    ) -> pb.SnapshotResponse:
        """Write a snapshot now; the path is empty without a snapshot location (as
        ``LocalStore.snapshot`` returns none)."""
        if not self._shard.durability.snapshot_uri:
            return pb.SnapshotResponse(shard=self._info(), path="")
        return pb.SnapshotResponse(shard=self._info(), path=self._shard.snapshot() or "")
