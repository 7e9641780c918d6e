"""Starting Ray the way isloader's commands, benchmarks and tests want it: local, quiet."""

from __future__ import annotations

import logging

__all__ = ["start_ray"]


def start_ray(num_cpus: int | None = 2, address: str | None = None) -> None:
    """``ray.init`` (unless already running) without the dashboard or progress bars.

    With ``address`` it joins an existing cluster (other trainer processes of a run).
    """
    import ray

    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "ray.data" else logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
