"""Process-wide settings every entry point applies first: no telemetry, loopback only."""

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
}


def quiet_telemetry() -> None:
    """Turn off every library's telemetry and hub access (there is no network for them)."""
    for key, value in _TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
