"""Where the served model comes from, and everything loaded with it.

``model_uri`` is an artifact directory or ``models:/<name>@<alias>`` (the registry's
``champion``): :func:`resolve_model_uri` turns it into ``(version, artifact_dir)``.
:func:`load_served_model` loads the artifact, **the item vectors it was trained with** and
builds the engine.

Item vectors: the model's tokens and candidates carry ``RankerConfig.item_representation``
vectors (default ``pinnerformer``: the daily batch job's item tower,
``pinnerformer_items.parquet``), which is *not* what the Feast item view holds (content
vectors). Serving therefore loads the item table of the representation the artifact names from
the examples directory it was trained on (``metadata.examples_dir``, or
``ServingConfig.item_vectors_dir``) at replica start, and reads only the user's sequence and
batch embedding from the online store. Items absent from that table are unknown (HTTP 422).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.engine import EngineConfig, RankingEngine
from transact.data.dataset import item_embedding_table, read_items
from transact.errors import UserError
from transact.model.artifact import CONFIG_FILE, WEIGHTS_FILE, ModelArtifact, load_model

PINNERFORMER_ITEMS = "pinnerformer_items.parquet"


class ModelSourceError(UserError):
    """The model URI or its item vectors cannot be resolved."""


def resolve_model_uri(uri: str) -> tuple[str, Path]:
    """``(version, artifact_dir)`` of ``uri``.

    For a directory the version is ``dir:<first 12 hex of the weights' sha256>`` so that a
    changed artifact at the same path is a new version.
    """
    if uri.startswith("models:/"):
        try:  # through sys.modules, so that the registry stays an optional, late import
            registry = importlib.import_module("transact.registry")
        except ImportError as err:
            raise ModelSourceError(f"{uri} needs the model registry (transact.registry), which "
                                   f"is not available: {err}") from err
        version, artifact_dir = registry.resolve_model(uri)
        return str(version), Path(artifact_dir)
    path = Path(uri)
    weights = path / WEIGHTS_FILE
    if not (path / CONFIG_FILE).is_file() or not weights.is_file():
        raise ModelSourceError(f"{uri} is not a model artifact directory (expected "
                               f"{CONFIG_FILE} and {WEIGHTS_FILE}) nor models:/<name>@<alias>")
    digest = hashlib.sha256()
    digest.update((path / CONFIG_FILE).read_bytes())
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"dir:{digest.hexdigest()[:12]}", path


def load_item_vectors(examples_dir: Path | str, representation: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(table (N, E) float32, known (N,) bool)``: the item vectors of ``representation``
    (row = item id) and which ids have one."""
    examples_dir = Path(examples_dir)
    if not (examples_dir / "items.parquet").is_file():
        raise ModelSourceError(f"{examples_dir}/items.parquet is missing: point "
                               f"item_vectors_dir at the examples the model was trained on")
    items = read_items(examples_dir)
    content = item_embedding_table(items)
    known = np.zeros(len(content), bool)
    known[items.column("item_id").to_numpy()] = True
    if representation == "content":
        return content, known
    if representation == "graph":
        from training.item_embeddings import read_item_graph

        return read_item_graph(examples_dir, len(content)), known
    import pyarrow.parquet as pq

    path = examples_dir / PINNERFORMER_ITEMS
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing: the model uses item_representation="
                               f"{representation!r} (the PinnerFormer item tower)")
    tower = pq.read_table(path)
    batch = item_embedding_table(tower, "item_emb", len(content))
    known = np.resize(known, len(batch)) & (np.arange(len(batch)) < len(content))
    has_vector = np.zeros(len(batch), bool)
    has_vector[tower.column("item_id").to_numpy()] = True
    known &= has_vector
    if representation == "pinnerformer":
        return batch, known
    both = np.zeros((len(batch), content.shape[1] + batch.shape[1]), np.float32)
    both[: len(content), : content.shape[1]] = content
    both[:, content.shape[1]:] = batch
    return both, known


@dataclass
class ServedModel:
    """A loaded model ready to serve: artifact, version, item vectors, engine."""

    version: str
    artifact_dir: Path
    artifact: ModelArtifact
    item_table: np.ndarray
    known_items: np.ndarray
    engine: RankingEngine

    @property
    def heads(self) -> list[str]:
        return list(self.artifact.config.ranker.heads)

    @property
    def reads_counters(self) -> bool:
        """Whether the model reads the engagement counters (then each request also reads
        its candidates' counters from the online store)."""
        return bool(self.artifact.config.ranker.use_engagement_counters)

    def known(self, item_ids: np.ndarray) -> np.ndarray:
        """``(C,)`` bool: which ids have an item vector."""
        inside = (item_ids >= 0) & (item_ids < len(self.known_items))
        return inside & self.known_items[np.where(inside, item_ids, 0)]


def load_served_model(uri: str, item_vectors_dir: str = "",
                      engine_cfg: EngineConfig | None = None,
                      resolved: tuple[str, Path] | None = None) -> ServedModel:
    """Resolve ``uri``, load the artifact and its item vectors, build the engine."""
    version, artifact_dir = resolved or resolve_model_uri(uri)
    artifact = load_model(artifact_dir)
    examples_dir = item_vectors_dir or artifact.metadata.get("examples_dir", "")
    if not examples_dir:
        raise ModelSourceError(f"{artifact_dir} does not name the examples it was trained on "
                               f"(metadata.examples_dir): set item_vectors_dir")
    representation = artifact.config.ranker.item_representation
    table, known = load_item_vectors(examples_dir, representation)
    engine = RankingEngine(artifact.model, table, engine_cfg)
    return ServedModel(version=version, artifact_dir=Path(artifact_dir), artifact=artifact,
                       item_table=table, known_items=known, engine=engine)
