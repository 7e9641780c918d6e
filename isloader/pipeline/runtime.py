"""Starting Ray the way isloader's commands, benchmarks and tests want it: local, quiet.

The screen belongs to the user: Ray's and Ray Data's console logging is kept at
WARNING (their files under the Ray session keep everything). ``ISLOADER_VERBOSE=1``
leaves Ray's logging as Ray configures it.
"""

from __future__ import annotations

import logging
import os

__all__ = ["start_ray", "quiet_ray"]


def quiet_ray() -> None:
    """Ray and Ray Data print warnings and errors only (unless ``ISLOADER_VERBOSE``)."""
    if os.environ.get("ISLOADER_VERBOSE"):
        return
    import ray.data  # configures Ray Data's logging, which is then adjusted here
    from ray.data._internal.logging import SessionFileHandler

    logging.getLogger("ray").setLevel(logging.WARNING)
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, (logging.FileHandler, SessionFileHandler)):
            handler.setLevel(logging.WARNING)  # the console; the session log keeps all
    ray.data.DataContext.get_current().enable_progress_bars = False


def start_ray(num_cpus: int | None = 2, address: str | None = None) -> None:
    """``ray.init`` (unless already running) without the dashboard, quiet.

    With ``address`` it joins an existing cluster (other trainer processes of a run).
    """
    import ray

    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    quiet_ray()
