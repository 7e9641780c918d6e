"""One trainer rank of the end-to-end test: DDP (gloo) over the real pipeline.

Run as ``python -m tests.pipeline.trainer_main CONFIG_JSON`` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set; rank 0 writes the results to ``config["out"]``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from isloader import ImportanceLoader, StoreClient
from isloader.pipeline.runtime import start_ray


def main() -> None:
    config = json.loads(sys.argv[1])
    dist.init_process_group("gloo")
    start_ray(address=config["ray_address"])
    store = StoreClient(config["store"])
    loader = ImportanceLoader(
        config["dataset"],
        store=store,
        batch_size=config["batch_size"],
        columns=["feat", "label"],
        window=4,
        seed=7,
        prune_every=2,
        prune_k=config["prune_k"],
        cache_bytes=0,  # every read goes to S3: bytes fetched show what pruning saves
        storage_options=config["storage_options"],
    )
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses, seen_after_init = [], None
    for epoch in range(config["epochs"]):
        total, count = 0.0, 0
        for batch in loader.epoch(epoch):
            out = model(batch["feat"])
            per_sample = F.cross_entropy(out, batch["label"], reduction="none")
            loss = (batch["weight"] * per_sample).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loader.report(batch["index"], out.detach(), batch["label"])
            total += float(per_sample.sum())
            count += len(per_sample)
        losses.append(total / count)
        if epoch == 0:
            seen_after_init = store.stats().seen
    if dist.get_rank() == 0:
        with open(config["out"], "w") as f:
            json.dump(
                {
                    "losses": losses,
                    "seen_after_init": seen_after_init,
                    "history": [h.as_dict() for h in loader.history],
                    "final_q": store.lookup(np.arange(store.num_samples)).tolist(),
                },
                f,
            )
    loader.close()
    store.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
