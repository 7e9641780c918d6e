"""Starting Ray: the object store is sized to fit where it can live in memory."""

from __future__ import annotations

import pytest

from isloader.pipeline.runtime import object_store_bytes


@pytest.mark.parametrize(
    ("shm_gb", "memory_gb", "expected_gb"),
    [(2, 24, 1.6), (12, 24, None), (0.1, 24, None)],  # compose's shm_size; a host; docker's 64MB
)
def test_the_object_store_fits_in_dev_shm(shm_gb, memory_gb, expected_gb) -> None:
    """In a container /dev/shm is small and Ray would fall back to disk under /tmp."""
    got = object_store_bytes(int(shm_gb * 2**30), int(memory_gb * 2**30))
    assert got == (None if expected_gb is None else int(0.8 * shm_gb * 2**30))
