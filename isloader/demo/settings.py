"""What ``isloader demo`` runs, as one pydantic model: the CLI's flags are its fields.

Torch-free, so the CLI (which every image runs, the store's included) can build its
parser without importing the training stack.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DemoSettings(BaseModel):
    """What ``isloader demo`` runs (every field is a flag of the same name)."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field("demo-output", description="directory for the table and PNGs")
    dataset: str | None = Field(None, description="your own indexed Parquet shards (URI)")
    store: str | None = Field(None, description="host:port,... of a deployed store")
    token_file: str | None = Field(None, description="bearer token of the deployed store")
    local: bool = Field(False, description="local Parquet files instead of emulated S3")
    train_size: int = Field(30000, ge=100)
    test_size: int = Field(10000, ge=100)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    methods: str = Field("uniform,ours_is,ours_is_prune,random_prune")
    seed: int = 0
    row_bytes: int = Field(4096, ge=0, description="bytes per stored row (emulated S3)")
    latency_ms: float = Field(20.0, ge=0, description="added to every S3 request")
    bandwidth_mbps: float = Field(100.0, ge=0, description="per connection, 0: no cap")
    cache_fraction: float = Field(0.5, gt=0, le=1, description="disk cache / dataset bytes")
    memory_mb: int = Field(16, ge=0, description="memory tier per reader process")
    format: str = Field("parquet", pattern="^(parquet|webdataset)$", description="shard format")

    def method_list(self) -> list[str]:
        from isloader.demo.methods import METHODS  # torch: only when a demo runs

        methods = [m for m in self.methods.split(",") if m]
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
        if "random_prune" in methods and "ours_is_prune" in methods:  # it follows ours' sizes
            methods = [m for m in methods if m != "random_prune"] + ["random_prune"]
        return methods
