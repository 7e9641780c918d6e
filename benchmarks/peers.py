"""The loaders a user would run instead, reading the same rows from the same endpoint.

Each peer writes the benchmark's rows (``raw`` blob + ``y`` label) in its own format,
once, and iterates them as a uniformly shuffled stream through a ``DataLoader`` with
the same number of worker processes as isloader's read workers, configured as its
documentation recommends for remote data:

- **Mosaic Streaming** (``StreamingDataset``, MDS shards, ``cache_limit`` = the budget,
  ``shuffle=True`` with its default ``py1e`` algorithm, ``batch_size`` passed so its
  partitioning matches the loader's, one canonical node and a shuffle block sized to
  the cache); boto3 reaches the endpoint through ``S3_ENDPOINT_URL``.
- **LitData** (``StreamingDataset`` + ``StreamingDataLoader``, chunks written by its
  ``optimize``, ``max_cache_size`` = the budget, ``shuffle=True``); its S3 client takes
  ``endpoint_url`` in ``storage_options`` (and its obstore client ``allow_http``, since
  the emulated endpoint is plain HTTP).
- **WebDataset** (tars, ``shardshuffle`` over the shard list, a 1,000-sample shuffle
  buffer, ``split_by_worker``, ``WebLoader``); ``http://`` URLs go through ``curl``, as
  for any S3-compatible endpoint reached over HTTP. WebDataset has no bounded cache, so
  it streams with none (its default).

Mosaic Streaming 0.13 pins numpy < 2.2 and LitData requires torchvision; both are
installed without their pins (``make bench-deps``). torchvision's wheels on this
machine are CUDA builds that cannot load beside the CPU torch, and Mosaic imports it
only for its vision datasets (not used here), so where ``import torchvision`` fails a
stand-in module takes its place (``_torchvision_stand_in``).
"""

from __future__ import annotations

import importlib.machinery
import io
import logging
import os
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PEERS", "peer_versions", "write_peer_data", "PeerLoader"]

PEERS = ("mosaic", "litdata", "webdataset")
TAR_MTIME = 1_700_000_000  # an integer mtime, as a user's tars have (a float one adds PAX headers)


def _torchvision_stand_in() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # an ImportError, or the CUDA build's RuntimeError
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]

    def module(name: str) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = made
        return made

    root, datasets = module("torchvision"), module("torchvision.datasets")
    transforms, functional = (
        module("torchvision.transforms"),
        module("torchvision.transforms.functional"),
    )
    datasets.VisionDataset = type("VisionDataset", (), {})
    functional.to_tensor = None
    root.datasets, root.transforms, transforms.functional = datasets, transforms, functional


def peer_versions() -> dict[str, str]:
    """The version of each peer that ran (``"missing"`` where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for peer, package in zip(PEERS, ("mosaicml-streaming", "litdata", "webdataset"), strict=True):
        try:
            out[peer] = version(package)
        except PackageNotFoundError:
            out[peer] = "missing"
    return out


# -- writing ---------------------------------------------------------------------------


def _lit_item(row: tuple[bytes, int]) -> dict[str, Any]:
    return {"raw": row[0], "y": int(row[1])}


def write_peer_data(peer: str, out: Path, raw: list[bytes], y: np.ndarray, shards: int) -> None:
    """``raw``/``y`` in ``peer``'s format under ``out`` (``shards`` shards of equal rows)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    per = -(-len(raw) // shards)
    row_bytes = len(raw[0]) + 16
    if peer == "mosaic":
        _torchvision_stand_in()
        from streaming import MDSWriter

        columns = {"raw": "bytes", "y": "int64"}
        with MDSWriter(out=str(out), columns=columns, size_limit=per * row_bytes) as writer:
            for blob, label in zip(raw, y, strict=True):
                writer.write({"raw": blob, "y": int(label)})
    elif peer == "litdata":
        _torchvision_stand_in()
        from litdata import optimize

        optimize(
            fn=_lit_item, inputs=list(zip(raw, y.tolist(), strict=True)), output_dir=str(out),
            chunk_bytes=per * row_bytes, num_workers=1, verbose=False, start_method="fork",
        )  # fmt: skip
    elif peer == "webdataset":
        import webdataset as wds

        for s in range(shards):
            with wds.TarWriter(str(out / f"shard-{s:05d}.tar"), mtime=TAR_MTIME) as sink:
                for i in range(s * per, min((s + 1) * per, len(raw))):
                    buffer = io.BytesIO()
                    np.save(buffer, np.frombuffer(raw[i], np.float32))
                    sink.write({"__key__": f"{i:08d}", "npy": buffer.getvalue(), "cls": int(y[i])})
    else:
        raise ValueError(f"unknown peer {peer!r}; choose from {PEERS}")


# -- reading ---------------------------------------------------------------------------


def _mosaic_block(local: Path, cache_bytes: int, workers: int) -> int:
    """Mosaic's shuffle block sized to its cache: with a bounded cache its defaults (64
    canonical nodes, blocks of 262,144 samples) keep far more shards in play than the
    cache holds and it re-downloads shards all epoch; one canonical node (one machine)
    and blocks whose shards fill half the cache between the workers keep it streaming."""
    import json

    shards = json.loads((local / "index.json").read_text())["shards"]
    size = max(s["raw_data"]["bytes"] for s in shards)
    samples = int(np.mean([s["samples"] for s in shards]))
    fit = max(1, cache_bytes // size // (2 * workers))
    return fit * samples


def _close_mosaic_clients(dataset: Any) -> None:
    """Mosaic reads ``index.json`` in this process; its boto3 client keeps that keep-alive
    connection open, and the forked workers would share the one socket (one worker's
    responses landing in another's shard files, measured here). Close it before the
    workers fork; each opens its own."""
    for stream in dataset.streams:
        client = getattr(stream._downloader, "_s3_client", None)
        if client is not None:
            client.close()
        stream._downloader.clean_up()


class _Collate:
    """Samples to a batch through the same decode as isloader's read tasks (a class, so
    spawned workers can unpickle it)."""

    def __init__(self, decode: Callable[[dict], dict]) -> None:
        self.decode = decode

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        columns = self.decode({"raw": [i["raw"] for i in items],
                               "y": np.array([int(i["y"]) for i in items])})  # fmt: skip
        return {k: torch.from_numpy(np.asarray(v)) for k, v in columns.items()}


def _wds_sample(sample: tuple[bytes, Any]) -> dict[str, Any]:
    return {"raw": np.load(io.BytesIO(sample[0])).tobytes(), "y": int(sample[1])}


class PeerLoader:
    """One peer's shuffled stream of batches of ``{"x", "y"}`` tensors, epoch by epoch.

    Args:
        peer: one of ``PEERS``.
        uri: the data on the endpoint (``s3://bucket/prefix``).
        endpoint: the emulated endpoint (``EmulatedObjectStore``).
        batch_size, workers, seed: as for isloader's loader.
        cache_dir, cache_bytes: the peer's local cache and its budget (Mosaic, LitData).
        decode: the same decode function isloader's read tasks apply (``raw`` -> ``x``).
    """

    def __init__(
        self,
        peer: str,
        uri: str,
        endpoint: Any,
        *,
        batch_size: int,
        workers: int,
        seed: int,
        cache_dir: str,
        cache_bytes: int,
        decode: Callable[[dict], dict],
    ) -> None:
        self.peer = peer
        self.batch_size = batch_size
        os.environ.update(endpoint.env)
        shutil.rmtree(cache_dir, ignore_errors=True)
        collate = _Collate(decode)
        if peer == "mosaic":
            _torchvision_stand_in()
            from streaming import StreamingDataset
            from streaming.base.util import clean_stale_shared_memory

            clean_stale_shared_memory()
            dataset = StreamingDataset(
                remote=uri, local=cache_dir, shuffle=True, shuffle_seed=seed,
                batch_size=batch_size, cache_limit=cache_bytes, num_canonical_nodes=1,
                shuffle_block_size=_mosaic_block(endpoint.local_path(uri), cache_bytes, workers),
            )  # fmt: skip
            _close_mosaic_clients(dataset)
            self._loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                persistent_workers=True,
            )  # fmt: skip
        elif peer == "litdata":
            _torchvision_stand_in()
            from litdata import StreamingDataLoader, StreamingDataset
            from litdata.streaming import downloader

            # LitData's obstore client options are a constant without ``allow_http``; the
            # emulated endpoint is plain HTTP (as a MinIO often is), so it is added there
            downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
            # its advice to keep 25 GB of cache is printed on every start: the budget is
            # the benchmark's, equal for every loader
            logging.getLogger("litdata").setLevel(logging.ERROR)

            options = {"endpoint_url": endpoint.endpoint,
                       "aws_access_key_id": endpoint.env["AWS_ACCESS_KEY_ID"],
                       "aws_secret_access_key": endpoint.env["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
            dataset = StreamingDataset(
                uri, cache_dir=cache_dir, shuffle=True, seed=seed, max_cache_size=cache_bytes,
                storage_options=options,
            )  # fmt: skip
            self._loader = StreamingDataLoader(
                dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                persistent_workers=True,
            )  # fmt: skip
        elif peer == "webdataset":
            import webdataset as wds

            shards = sorted(p.name for p in endpoint.local_path(uri).glob("*.tar"))
            urls = [endpoint.http_url(f"{uri}/{name}") for name in shards]
            dataset = (
                wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, empty_check=False,
                               workersplitter=wds.split_by_worker)
                .shuffle(1000, seed=seed)
                .to_tuple("npy", "cls")
                .map(_wds_sample)
                .batched(batch_size, collation_fn=collate, partial=False)
            )  # fmt: skip
            self._loader = wds.WebLoader(
                dataset, batch_size=None, num_workers=workers, persistent_workers=True
            )
        else:
            raise ValueError(f"unknown peer {peer!r}; choose from {PEERS}")

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Every batch of the next epoch, in the peer's own order (about ``N / B``: each
        epoch runs to its end, as the peers expect)."""
        yield from self._loader

    def close(self) -> None:
        """Stop the worker processes."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader = None
