"""Serving: the Ray Serve ranking endpoint (:mod:`serving.app`), its request logic
(:mod:`serving.service`), the exact fast inference engine (:mod:`serving.engine`) and where
the served model comes from (:mod:`serving.model_source`). See ``docs/serving.md``.

Importing the package turns telemetry off and keeps Ray on loopback *before* Ray is imported
(Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import).
"""

from __future__ import annotations

from transact.runtime import quiet_telemetry

quiet_telemetry()
