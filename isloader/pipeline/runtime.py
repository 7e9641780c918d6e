"""Starting Ray the way isloader's commands, benchmarks and tests want it: local, quiet.

The screen belongs to the user: Ray's and Ray Data's console logging is kept at
WARNING (their files under the Ray session keep everything). ``ISLOADER_VERBOSE=1``
leaves Ray's logging as Ray configures it.
"""

from __future__ import annotations

import logging
import os
import shutil

__all__ = ["start_ray", "quiet_ray", "object_store_bytes"]

_RAY_DEFAULT_SHARE = 0.3  # Ray's object store: 30% of memory unless told otherwise


def _verbose() -> bool:
    return bool(os.environ.get("ISLOADER_VERBOSE"))


def _not_the_auth_notice(record: logging.LogRecord) -> bool:
    """Ray announces on every start that token authentication is on (its default); a
    warning that it is *off* still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


def quiet_ray() -> None:
    """Ray and Ray Data print warnings and errors only (unless ``ISLOADER_VERBOSE``)."""
    if _verbose():
        return
    import ray.data  # configures Ray Data's logging, which is then adjusted here
    from ray.data._internal.logging import SessionFileHandler

    logging.getLogger("ray").setLevel(logging.WARNING)
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, (logging.FileHandler, SessionFileHandler)):
            handler.setLevel(logging.WARNING)  # the console; the session log keeps all
    ray.data.DataContext.get_current().enable_progress_bars = False


def object_store_bytes(shm_free: int, memory: int) -> int | None:
    """The object store size to ask Ray for, or None for Ray's default.

    Ray sizes its object store at 30% of memory; where ``/dev/shm`` is smaller (a
    container's, e.g. compose's ``shm_size: 2gb``) it falls back to files under
    ``/tmp`` and warns that this harms performance. Fitting the store into
    ``/dev/shm`` keeps it in memory; below 256 MB that is too small to be worth it.
    """
    if shm_free >= _RAY_DEFAULT_SHARE * memory or shm_free < 256 << 20:
        return None
    return int(0.8 * shm_free)


def _local_object_store() -> dict[str, int]:
    try:
        shm = shutil.disk_usage("/dev/shm").free
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return {}
    size = object_store_bytes(shm, memory)
    return {} if size is None else {"object_store_memory": size}


def start_ray(num_cpus: int | None = 2, address: str | None = None) -> None:
    """``ray.init`` (unless already running) without the dashboard, quiet.

    With ``address`` it joins an existing cluster (other trainer processes of a run).
    A local cluster's object store fits in ``/dev/shm`` (:func:`object_store_bytes`).
    """
    import ray

    if not ray.is_initialized():
        if not _verbose():
            auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
            if _not_the_auth_notice not in auth.filters:
                auth.addFilter(_not_the_auth_notice)
        options = (
            {"address": address} if address else {"num_cpus": num_cpus, **_local_object_store()}
        )
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    quiet_ray()
