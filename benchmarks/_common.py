"""Timing, reporting and store processes shared by the benchmark scripts."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

__all__ = [
    "time_calls",
    "report",
    "free_port",
    "rss_mb",
    "ShardProcess",
    "plot_curves",
    "finite_or_none",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024


class ShardProcess:
    """``isloader store serve ARGS`` on a fixed free port; ``start`` again after a stop
    restarts it on the same port (with whatever log and snapshots it kept)."""

    def __init__(self, args: list[str]) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "isloader.cli", "store", "serve",
                     "--port", str(self.port), *args]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start it; returns the seconds until it listens (restore and replay included)."""
        begin = time.perf_counter()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b"listening on" in line:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain
        return time.perf_counter() - begin

    def rss_mb(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(300)


def finite_or_none(value):
    """``value`` with every NaN or infinity (at any depth) replaced by None, so the final
    line is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 5) -> np.ndarray:
    """Seconds per call, ``repeats`` samples after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def report(rows: list[dict], final: dict) -> None:
    """Print a table of ``rows`` and end with the one JSON line tools read."""
    if rows:
        keys = list(rows[0])
        print(" | ".join(f"{k:>14}" for k in keys))
        for row in rows:
            print(
                " | ".join(
                    f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in row.values()
                )
            )
    print(json.dumps(final))


_COMPARISON_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("acc @ equal steps", lambda m: f"{m['acc_equal_steps']:.4f}"),
    ("Δ acc vs uniform",
     lambda m: "{:+.4f} [{:+.4f}, {:+.4f}]".format(*m["acc_delta_vs_baseline"])),
    ("time to uniform's acc / its time",
     lambda m: "{:.2f} [{:.2f}, {:.2f}]".format(*m["time_to_baseline_acc_ratio"])),
    ("reached", lambda m: str(m["reached_baseline_acc"])),
    ("acc @ uniform's time", lambda m: f"{m['acc_at_baseline_time']:.4f}"),
    ("s / epoch", lambda m: f"{m['epoch_seconds']:.2f}"),
]  # fmt: skip


def methods_markdown(
    heading: str, methods: dict[str, dict], columns: list[tuple[str, Callable[[dict], str]]]
) -> list[str]:
    """A markdown table with a row per method of ``isloader.results.compare_methods``
    output: the comparison against the baseline, then ``columns`` (header, cell)."""
    columns = _COMPARISON_COLUMNS + columns
    lines = [heading, "", "| method | " + " | ".join(h for h, _ in columns) + " |"]
    lines.append("| --- " * (len(columns) + 1) + "|")
    for method, m in methods.items():
        lines.append(f"| {method} | " + " | ".join(cell(m) for _, cell in columns) + " |")
    return [*lines, ""]


def plot_curves(methods: dict, title: str, path, xlabel: str = "training wall time (s)") -> None:
    """Mean test accuracy against mean wall time per method (band: min-max over seeds),
    from ``isloader.results.compare_methods`` output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, m in methods.items():
        seconds = np.mean([c["seconds"] for c in m["curves"]], axis=0)
        acc = np.array([c["acc"] for c in m["curves"]])
        ax.plot(seconds, acc.mean(0), marker="o", label=method)
        ax.fill_between(seconds, acc.min(0), acc.max(0), alpha=0.15)
    ax.set(xlabel=xlabel, ylabel="test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
