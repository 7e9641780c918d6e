"""Shared test machinery: real store server processes and statistics helpers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

_LISTENING = re.compile(r"listening on (\S+)")


class StoreProcess:
    """``isloader store serve`` as a child process on an ephemeral port."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.output: list[str] = []  # what it printed up to "listening on"
        self.start()

    def start(self, timeout: float = 60.0) -> StoreProcess:
        full_env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "isloader.cli", "store", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        deadline = time.monotonic() + timeout
        lines = self.output = []
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.address = match.group(1)
                return self
        self.proc.kill()
        raise RuntimeError("store process did not start:\n" + "".join(lines))

    def kill(self) -> None:
        """SIGKILL: no snapshot, no flush."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM: the server snapshots and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_shards(
    num_samples: int, num_shards: int, extra: Sequence[str] = (), per_shard_dir: Path | None = None
) -> list[StoreProcess]:
    procs = []
    try:
        for s in range(num_shards):
            args = [
                "--num-samples", str(num_samples), "--shard", str(s),
                "--num-shards", str(num_shards), "--port", "0", *extra,
            ]  # fmt: skip
            if per_shard_dir is not None:
                args += ["--wal-dir", str(per_shard_dir / f"shard-{s}")]
            procs.append(StoreProcess(args))
    except Exception:
        for p in procs:
            p.stop()
        raise
    return procs


def free_port() -> int:
    """A loopback port nothing listens on now (for servers that take a fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chi_square_pvalue(drawn: np.ndarray, probabilities: np.ndarray) -> float:
    """p-value of the draws against the exact distribution (cells with p=0 must be empty)."""
    counts = np.bincount(drawn, minlength=len(probabilities))
    zero = probabilities == 0
    assert counts[zero].sum() == 0, "drew an index whose probability is 0"
    expected = probabilities[~zero] * len(drawn)
    return float(stats.chisquare(counts[~zero], expected).pvalue)


def window_marginals_pvalue(
    windows: list[np.ndarray], probabilities: np.ndarray, min_p: float = 0.01
) -> float:
    """p-value that *every* draw of the windows has the marginal ``probabilities``.

    Draws inside a window may be correlated (locality-aware draws share units), so the
    windows, not the draws, are the independent replicates: each window's counts in
    the cells (every row with ``p >= min_p``, the rest pooled) are one observation, and
    Hotelling's T^2 tests their mean against ``count * p`` with the covariance measured
    across windows; no design effect is assumed.
    """
    p = np.asarray(probabilities, float)
    big = np.flatnonzero(p >= min_p)
    cell_of = np.full(len(p), len(big))  # the pooled rest is the last cell, left out
    cell_of[big] = np.arange(len(big))
    counts = np.stack([np.bincount(cell_of[w], minlength=len(big) + 1)[:-1] for w in windows])
    for w in windows:
        assert p[w].min() > 0, "drew an index whose probability is 0"
    n, k = counts.shape
    expected = len(windows[0]) * p[big]
    diff = counts.mean(axis=0) - expected
    cov = np.cov(counts, rowvar=False)
    t2 = n * diff @ np.linalg.solve(cov, diff)
    f = (n - k) / (k * (n - 1)) * t2
    return float(stats.f.sf(f, k, n - k))


def in_order_leaves(n: int) -> np.ndarray:
    """Leaf positions of a heap-layout tree over ``n`` leaves, left to right."""
    order, stack, node = [], [], 1
    while stack or node:
        while node:
            stack.append(node)
            node = 2 * node if node < n else 0
        node = stack.pop()
        if node >= n:
            order.append(node - n)
            node = 0
        else:
            node = 2 * node + 1
    return np.array(order, dtype=np.int64)
