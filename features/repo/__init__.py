"""The Feast feature repository: entities, sources and feature views, one definition set.

Layout (Feast's recommended multi-environment layout: shared definitions, one
``feature_store.yaml`` per environment)::

    features/repo/entities.py                user, item
    features/repo/sources.py                 push + batch sources, per profile
    features/repo/views.py                   the three feature views
    features/repo/embedded/feature_store.yaml    SQLite online, local files, file registry
    features/repo/production/feature_store.yaml  Redis online, PostgreSQL offline + registry

:func:`feature_objects` returns every object to ``FeatureStore.apply`` for a profile;
``features.store`` builds the store from a :class:`features.store.FeatureProfile` and applies it.
"""

from __future__ import annotations
