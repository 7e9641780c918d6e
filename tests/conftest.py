"""Session-scoped real services: an S3 endpoint (moto) and, on demand, Ray."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest

# The readers' disk tier defaults to ~/.cache/isloader: tests keep theirs apart.
_CACHE_DIR = tempfile.mkdtemp(prefix="isloader-test-cache-")
os.environ["ISLOADER_CACHE_DIR"] = _CACHE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on 127.0.0.1 (moto's server), for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint: str) -> tuple[str, dict]:
    """A fresh bucket; returns its ``s3://`` URI and the storage options to reach it."""
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "anon": False}
    fs = s3fs.S3FileSystem(**options)
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return f"s3://{name}", options


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray, started once for the tests that need it (2 CPUs, local)."""
    import ray

    from isloader.pipeline.runtime import start_ray

    start_ray()
    yield
    ray.shutdown()
