"""Run by test_two_nodes.py in its own process: a two-node Ray cluster (both nodes on
this machine), the loader reading through actors on both, each node's disk cache."""

from __future__ import annotations

import json
import sys

import ray
import torch
from ray.cluster_utils import Cluster

from isloader import ImportanceLoader, LocalStore


def main() -> None:
    uri, endpoint, cache_root = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    options = {"client_kwargs": {"endpoint_url": endpoint}, "anon": False}
    try:
        nodes = sorted(n["NodeID"][:16] for n in ray.nodes() if n["Alive"])
        with LocalStore(int(sys.argv[4])) as store:
            loader = ImportanceLoader(
                uri, store=store, batch_size=32, columns=["feat", "label"], window=2,
                storage_options=options, cache_dir=cache_root + "/{node}",
                read_on_all_nodes=True,
            )  # fmt: skip
            model = torch.nn.Linear(3, 7)
            for epoch in (0, 1):
                for batch in loader.epoch(epoch):
                    loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
            loader.close()
            print(json.dumps({"nodes": nodes, "history": [h.as_dict() for h in loader.history],
                              "units": loader.catalog.num_units}))  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
