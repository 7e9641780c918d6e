"""Data plane: shard catalog and random-access readers (pyarrow + fsspec only)."""
