from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardInfo(_message.Message):
    __slots__ = ("start", "stop", "total_mass", "active_count", "version", "epoch", "config_json")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MASS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    total_mass: float
    active_count: int
    version: int
    epoch: int
    config_json: str
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., total_mass: _Optional[float] = ..., active_count: _Optional[int] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., config_json: _Optional[str] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("indices", "values", "client_id", "seq")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    indices: bytes
    values: bytes
    client_id: str
    seq: int
    def __init__(self, indices: _Optional[bytes] = ..., values: _Optional[bytes] = ..., client_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("shard", "applied")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    applied: bool
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("count", "seed", "layout", "units_per_window")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    UNITS_PER_WINDOW_FIELD_NUMBER: _ClassVar[int]
    count: int
    seed: int
    layout: str
    units_per_window: int
    def __init__(self, count: _Optional[int] = ..., seed: _Optional[int] = ..., layout: _Optional[str] = ..., units_per_window: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("shard", "indices", "q")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    indices: bytes
    q: bytes
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., indices: _Optional[bytes] = ..., q: _Optional[bytes] = ...) -> None: ...

class SetLayoutRequest(_message.Message):
    __slots__ = ("layout", "bounds")
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    layout: str
    bounds: bytes
    def __init__(self, layout: _Optional[str] = ..., bounds: _Optional[bytes] = ...) -> None: ...

class SetLayoutResponse(_message.Message):
    __slots__ = ("shard", "units")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    units: int
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., units: _Optional[int] = ...) -> None: ...

class UnitsRequest(_message.Message):
    __slots__ = ("layout",)
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    layout: str
    def __init__(self, layout: _Optional[str] = ...) -> None: ...

class UnitsResponse(_message.Message):
    __slots__ = ("shard", "first_unit", "mass", "active", "pruned")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIT_FIELD_NUMBER: _ClassVar[int]
    MASS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    first_unit: int
    mass: bytes
    active: bytes
    pruned: bytes
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., first_unit: _Optional[int] = ..., mass: _Optional[bytes] = ..., active: _Optional[bytes] = ..., pruned: _Optional[bytes] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("indices",)
    INDICES_FIELD_NUMBER: _ClassVar[int]
    indices: bytes
    def __init__(self, indices: _Optional[bytes] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("shard", "q")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    q: bytes
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., q: _Optional[bytes] = ...) -> None: ...

class EndEpochRequest(_message.Message):
    __slots__ = ("epoch", "eps")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    eps: float
    def __init__(self, epoch: _Optional[int] = ..., eps: _Optional[float] = ...) -> None: ...

class EndEpochResponse(_message.Message):
    __slots__ = ("shard", "applied")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    applied: bool
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., applied: _Optional[bool] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ("threshold", "epoch")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    epoch: int
    def __init__(self, threshold: _Optional[float] = ..., epoch: _Optional[int] = ...) -> None: ...

class PruneResponse(_message.Message):
    __slots__ = ("shard", "pruned")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    pruned: int
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., pruned: _Optional[int] = ...) -> None: ...

class ReadmitRequest(_message.Message):
    __slots__ = ("fraction", "seed", "epoch")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    seed: int
    epoch: int
    def __init__(self, fraction: _Optional[float] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReadmitResponse(_message.Message):
    __slots__ = ("shard", "readmitted")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    READMITTED_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    readmitted: int
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., readmitted: _Optional[int] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("shard", "num_samples", "seen", "pruned", "sum_sq", "q_min", "q_max", "histogram", "histogram_edges")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    SUM_SQ_FIELD_NUMBER: _ClassVar[int]
    Q_MIN_FIELD_NUMBER: _ClassVar[int]
    Q_MAX_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_EDGES_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    num_samples: int
    seen: int
    pruned: int
    sum_sq: float
    q_min: float
    q_max: float
    histogram: _containers.RepeatedScalarFieldContainer[int]
    histogram_edges: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., num_samples: _Optional[int] = ..., seen: _Optional[int] = ..., pruned: _Optional[int] = ..., sum_sq: _Optional[float] = ..., q_min: _Optional[float] = ..., q_max: _Optional[float] = ..., histogram: _Optional[_Iterable[int]] = ..., histogram_edges: _Optional[_Iterable[float]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("shard", "path")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    shard: ShardInfo
    path: str
    def __init__(self, shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...
