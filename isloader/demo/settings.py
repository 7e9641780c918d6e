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
    epochs: int = Field(4, ge=1, description="per method: the benchmark's 4 epochs, 1 seed")
    batch_size: int = Field(128, ge=1)
    methods: str = Field("uniform_stream,uniform_cached,ours_is,ours_is_prune")
    seed: int = 0
    row_bytes: int = Field(4096, ge=0, description="bytes per stored row (emulated S3)")
    latency_ms: float = Field(20.0, ge=0, description="before every S3 response")
    bandwidth_mb_s: float = Field(25.0, ge=0, description="MB/s shared by all connections")
    concurrency: int = Field(64, ge=1, description="S3 requests served at once")
    cache_fraction: float = Field(
        0.5, gt=0, le=1, description="cache budget / the rows' bytes, every cached method"
    )
    step_ms: float = Field(0.0, ge=0, description="emulated accelerator time per step")
    format: str = Field("parquet", pattern="^(parquet|webdataset)$", description="shard format")

    def method_list(self) -> list[str]:
        """The methods to run, in order: one uniform baseline on local data, random
        pruning after the method whose sizes it follows; unknown names raise ``ValueError``."""
        from isloader.demo.methods import METHODS  # torch: only when a demo runs

        methods = [m for m in self.methods.split(",") if m]
        if self.local or self.dataset:  # no endpoint, no cache: one uniform baseline
            methods = list(dict.fromkeys("uniform" if m.startswith("uniform") else m
                                         for m in methods))  # fmt: skip
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
        if "random_prune" in methods and "ours_is_prune" in methods:  # it follows ours' sizes
            methods = [m for m in methods if m != "random_prune"] + ["random_prune"]
        return methods
