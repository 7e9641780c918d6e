"""Starting Ray: the object store is sized to fit where it can live in memory."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_starting_ray_leaves_the_screen_to_the_user(tmp_path) -> None:
    """A fresh home (no Ray token yet): Ray starts with token authentication, as it
    would, and nothing of Ray's start-up reaches the terminal."""
    code = (
        "import ray\n"
        "from isloader.pipeline.runtime import start_ray\n"
        "start_ray()\n"
        "assert ray.get(ray.remote(lambda: 41).remote()) + 1 == 42\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ISLOADER_VERB"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".ray" / "auth_token").exists()  # token authentication stayed on
    assert result.stdout + result.stderr == ""
