"""Feast's CLI entry of the production profile: `cd features/repo/production && feast apply` (or
`feast materialize START END`, `feast ui`) discovers these objects. They are the ones the
platform applies (`features.repo.definitions`), bound to this directory's feature_store.yaml.
"""

from __future__ import annotations

from pathlib import Path

from features.repo.definitions import for_repo_dir

_definitions = for_repo_dir(Path(__file__).resolve().parent)

user = _definitions.user
item = _definitions.item
user_action_sequence = _definitions.user_action_sequence
user_batch_embedding = _definitions.user_batch_embedding
item_content = _definitions.item_content
user_action_sequence_push = _definitions.sources.sequence_push
item_engagement = _definitions.item_engagement
user_engagement = _definitions.user_engagement
item_engagement_push = _definitions.sources.item_counts_push
user_engagement_push = _definitions.sources.user_counts_push
