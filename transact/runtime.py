"""Process-wide settings every entry point applies first: no telemetry, loopback only, and
Ray Serve start-up checks patient enough for a loaded 2-core machine."""

from __future__ import annotations

import os

_TELEMETRY_OFF = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps Ray's listeners on 127.0.0.1
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "false",
    "AIRFLOW__CORE__ANALYTICS_ENABLED": "False",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Serve kills its HTTP proxy when three readiness checks of 5 s fail in a row; on 2
    # cores busy with training the proxy's start-up takes longer (seen: `transact demo` beside
    # an experiments run died with ActorDiedError in `serve.start`)
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
}


def quiet_telemetry() -> None:
    """Turn off every library's telemetry and hub access (there is no network for them) and set
    the Ray Serve start-up timeouts (before Ray starts: its processes inherit them)."""
    for key, value in _TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def start_local_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join ``address`` or start a local Ray whose every listener is on 127.0.0.1, with no
    dashboard and no usage stats. A no-op when Ray is already initialised."""
    import logging

    quiet_telemetry()
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=False)
