"""Ray start-up: the one place every command joins a cluster or starts a local instance."""

from __future__ import annotations

import os
from typing import Any


def init_ray(cfg, log_to_driver: bool = True) -> None:
    """Join ``ray.address`` (or RAY_ADDRESS, as under ``ray job submit``), else start a local instance.

    A local instance gets the object-store cap and the task-event limit of ``cfg.ray``.
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": log_to_driver}
    if address == "local":
        if cfg.ray.num_cpus:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        if cfg.ray.object_store_mb:
            kwargs["object_store_memory"] = cfg.ray.object_store_mb * 2**20
        if cfg.ray.task_events_max:
            kwargs["_system_config"] = {"task_events_max_num_task_in_gcs": cfg.ray.task_events_max}
    ray.init(**kwargs)
