"""The Feast feature repository: entities, sources and feature views, one definition set.

Layout (Feast's multi-environment layout: shared definitions, one ``feature_store.yaml`` per
environment)::

    features/repo/entities.py                user, item
    features/repo/sources.py                 push + batch sources, per profile
    features/repo/views.py                   the three feature views
    features/repo/definitions.py             the objects of one profile (build, for_repo_dir)
    features/repo/embedded/feature_store.yaml    SQLite online, local files, file registry
    features/repo/embedded/definitions.py        what `feast apply` discovers there
    features/repo/production/feature_store.yaml  Redis online, PostgreSQL offline + registry
    features/repo/production/definitions.py      what `feast apply` discovers there

``features.store.feature_objects`` (``transact features apply``) and the two ``definitions.py``
files (Feast's own CLI) build the same objects with :func:`features.repo.definitions.build`.
"""

from __future__ import annotations
