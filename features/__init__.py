"""The feature platform: Feast definitions (``features.repo``), the durable realtime event
stream and its exactly-once processor, point-in-time sequences and online reads for serving.
See ``docs/features.md``."""
