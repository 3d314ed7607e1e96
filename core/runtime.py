"""Where work runs: Ray start-up (the one place every command joins a cluster or starts a local
instance) and the torch device a model is put on."""

from __future__ import annotations

import os
from typing import Any


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other value unchanged (torch imported here,
    so this module stays light)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def init_ray(cfg, log_to_driver: bool | None = None) -> None:
    """Join ``ray.address`` (or RAY_ADDRESS, as under ``ray job submit``), else start a local instance.

    A local instance gets the object-store cap and the task-event limit of ``cfg.ray``.
    ``log_to_driver`` None: workers' output is forwarded only when the command's console is
    verbose (`core.console`); otherwise it stays in Ray's session logs, and the console says where
    (also when Ray was already up).
    """
    import ray

    from core.console import current

    console = current()
    if ray.is_initialized():
        _name_session_logs(console)
        return
    if log_to_driver is None:
        log_to_driver = console.verbose
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
    global _started
    _started = True
    _name_session_logs(console)


_started = False  # whether init_ray started (or joined) Ray in this process, for shutdown_ray


def shutdown_ray() -> None:
    """Shut down the Ray connection init_ray opened in this process (a local instance stops with it)."""
    global _started
    if not _started:
        return
    import ray

    _started = False
    ray.shutdown()


def _name_session_logs(console) -> None:
    import ray

    context = ray.get_runtime_context()
    console.ray_logs(os.path.join(context.get_temp_dir(), context.get_session_name(), "logs"))
