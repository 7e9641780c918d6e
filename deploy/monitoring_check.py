"""The monitoring check: two store shards, a real Prometheus scraping them, and every
query of the Grafana dashboard answered with data through Prometheus's HTTP API.

Beside ``deploy/smoke.sh`` (the containers): this runs the shards as local processes
(``isloader store serve``, WAL and snapshots on, a token) and the ``prometheus`` binary
(Debian's package, the one ``docker/prometheus.Dockerfile`` installs) with the scrape
job of ``deploy/prometheus/prometheus.yml`` pointed at them, drives real traffic
(updates, plans, an epoch end, a prune, a refused token, a bad request), then runs each
dashboard query. Exits 1 if any query comes back empty.

    make monitoring-check            # or: python deploy/monitoring_check.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
N = 20_000


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(k: int, work: Path, token: Path) -> tuple[subprocess.Popen, str, int]:
    port, metrics = _port(), _port()
    env = {
        **os.environ,
        "ISLOADER_NUM_SAMPLES": str(N),
        "ISLOADER_NUM_SHARDS": "2",
        "ISLOADER_SHARD": str(k),
        "ISLOADER_HOST": "127.0.0.1",
        "ISLOADER_PORT": str(port),
        "ISLOADER_METRICS_PORT": str(metrics),
        "ISLOADER_TOKEN_FILE": str(token),
        "ISLOADER_WAL_DIR": str(work / f"wal-{k}"),
        "ISLOADER_SNAPSHOT_URI": str(work / f"snap-{k}"),
        "ISLOADER_SNAPSHOT_INTERVAL": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "isloader.cli", "store", "serve"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, f"127.0.0.1:{port}", metrics


def _query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def _bad_request(address: str, token: str) -> None:
    """One request the shard refuses (the client checks bounds first, so send it raw)."""
    import grpc

    from isloader._proto import store_pb2 as pb
    from isloader._proto import store_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = store_pb2_grpc.ImportanceStoreStub(channel)
        with contextlib.suppress(grpc.RpcError):
            stub.Prune(pb.PruneRequest(threshold=-1.0, epoch=1),
                       metadata=(("authorization", f"Bearer {token}"),), timeout=10)  # fmt: skip


def _traffic(addresses: list[str], token: str, seconds: float) -> None:
    from isloader.store.client import StoreClient

    rng = np.random.default_rng(0)
    with StoreClient(addresses, token=token) as client:
        client.update(np.arange(N), rng.lognormal(0, 1, N))
        client.end_epoch(0, 1e-3)
        client.prune(2.0, epoch=0)
        _bad_request(addresses[0], token)
        with contextlib.suppress(Exception), StoreClient(addresses, token="wrong") as bad:
            bad.stats()  # refused: wrong token
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            idx = rng.integers(0, N, 512)
            client.update(idx, rng.lognormal(0, 1, 512))
            client.sample(256, seed=int(rng.integers(1 << 30)))
            time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default=shutil.which("prometheus"))
    parser.add_argument("--seconds", type=float, default=25.0, help="traffic before querying")
    args = parser.parse_args()
    if not args.prometheus:
        print(
            "no prometheus binary: apt-get install prometheus (Debian's package)", file=sys.stderr
        )
        return 2
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "isloader.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    job = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    with tempfile.TemporaryDirectory(prefix="isloader-monitoring-") as tmp:
        work = Path(tmp)
        token = work / "token.txt"
        token.write_text("monitoring-check-token\n")
        token.chmod(0o600)
        procs, addresses, targets = [], [], []
        try:
            for k in range(2):
                proc, address, metrics = _shard(k, work, token)
                procs.append(proc)
                addresses.append(address)
                targets.append(f"127.0.0.1:{metrics}")
            job["global"]["scrape_interval"] = job["global"]["evaluation_interval"] = "1s"
            job["scrape_configs"][0]["static_configs"][0]["targets"] = targets
            (work / "prometheus.yml").write_text(yaml.safe_dump(job))
            web = _port()
            procs.append(subprocess.Popen(
                [args.prometheus, f"--config.file={work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            time.sleep(3)  # shards listening, Prometheus up
            _traffic(addresses, "monitoring-check-token", args.seconds)
            time.sleep(3)  # the last scrapes
            base = f"http://127.0.0.1:{web}"
            empty = [q for q in queries if not _query(base, q)]
        finally:
            for proc in procs:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
                if proc.poll() is None:
                    proc.kill()
    for q in queries:
        print(("EMPTY  " if q in empty else "data   ") + q)
    print(json.dumps({"queries": len(queries), "with_data": len(queries) - len(empty)}))
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
