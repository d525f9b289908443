"""PinSage-style item embeddings learned from the co-engagement graph.

The paper's tokens carry PinSage vectors: graph embeddings that place items engaged together
close to each other, with content features as input. Content vectors alone are a weak
stand-in: on the synthetic world an item's content vector is its topic centroid plus large noise,
on MovieLens a title embedding says little about who rates a film. This module learns
``(n_items + 1, D)`` item vectors from what users engaged with together:

* **Graph** (:func:`co_engagement_graph`): items ``i``, ``j`` are linked each time one user
  engaged positively (click / save) with both within ``window`` consecutive engagements and
  ``session_gap_ms`` of each other. Edge weight = number of such co-engagements.
* **Importance pooling** (:func:`neighbour_matrix`): like PinSage, each item keeps its ``T``
  most important neighbours (here: the heaviest co-engagement edges, instead of random-walk
  visit counts) with weights normalised to sum to 1.
* **Encoder** (:class:`ItemGraphEncoder`): an MLP over ``[x_i, (P x)_i, (P^2 x)_i, deg_i]``,
  the item's content vector, its importance-pooled 1- and 2-hop neighbourhood means and its log
  degree, L2-normalised and scaled. The neighbourhood aggregates are precomputed once
  (SIGN-style) rather than learned per hop, which keeps training to seconds on a CPU; items
  without neighbours (cold items) are encoded from their content alone.
* **Loss**: in-batch sampled softmax over co-engaged pairs (each pair's partner against every
  other item of the batch), symmetric, temperature ``temperature``: PinSage's objective with
  in-batch negatives.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from transact.errors import UserError
from transact.schema import ITEM_EMB_DIM, ActionType

#: the item vectors of ``item_representation="graph"``, next to the examples
GRAPH_FILE = "item_graph.parquet"
#: what they were made from (window, events, edges, config)
GRAPH_SUMMARY_FILE = "item_graph.json"
#: the same vectors made from the window through the *test* start (training + validation
#: events), for a model refitted on train + validation (``TrainConfig.refit_on_val``)
GRAPH_REFIT_FILE = "item_graph_refit.parquet"
GRAPH_REFIT_SUMMARY_FILE = "item_graph_refit.json"


#: how the ``graph`` item vectors are made (:class:`ItemGraphConfig` ``mode``)
ITEM_GRAPH_MODES = ("learned", "propagated", "spectral", "spectral_propagated", "clustered")
#: the modes that read every impression of the training window (the others: clicks / saves)
IMPRESSION_MODES = ("spectral", "spectral_propagated", "clustered")


@dataclass
class ItemGraphConfig:
    """Graph construction and training of the item embeddings."""

    #: width of the learned vectors (the ranker's item embedding width)
    dim: int = ITEM_EMB_DIM
    #: link each engagement with the next ``window`` engagements of the same user ...
    window: int = 5
    #: ... that happened within this long of it
    session_gap_ms: int = 30 * 60 * 1000
    #: importance-pooled neighbours kept per item
    n_neighbours: int = 30
    hidden_dim: int = 128
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 3e-3
    temperature: float = 0.1
    #: norm of every output vector (content vectors of the synthetic world have norm ~2.4)
    output_norm: float = 2.0
    seed: int = 0
    num_threads: int = 1
    #: ``learned``: the MLP encoder trained with the in-batch softmax; ``propagated``: no
    #: training, the importance-pooled propagation ``(x + P x + P^2 x) / 3`` of the content
    #: vectors (a fixed two-hop graph convolution; denoises an item's content by what is
    #: engaged with it: topic recovered by a linear probe 80 % vs 70 % from content on the
    #: demo world), rescaled to ``output_norm``; ``spectral``: no training, the item factors
    #: of the training window's user x item *impression* matrix (every logged impression,
    #: skips included; :func:`impression_factors`); ``spectral_propagated``: half the
    #: dimensions each, the spectral factors beside the leading principal directions of the
    #: propagated content vectors; ``clustered``: k-means (``n_clusters``) of the
    #: clustering input (below), written as a one-hot cluster beside the leading
    #: ``dim - n_clusters`` dimensions of the ``spectral_propagated`` vectors (a hard
    #: topic-like id the model can match exactly, plus a soft residue)
    mode: str = "learned"
    #: clusters of the ``clustered`` mode (< ``dim``); best of ``cluster_restarts`` seeded
    #: k-means++ runs (``cluster_iterations`` Lloyd steps each) by inertia
    n_clusters: int = 20
    cluster_restarts: int = 5
    cluster_iterations: int = 100
    #: what the ``clustered`` mode clusters: ``cluster_factors_per_cluster * n_clusters``
    #: impression factors beside the propagated content vector (each part unit-normed; k
    #: clusters need k - 1 directions to part); 0 clusters the ``spectral_propagated``
    #: vectors themselves (16 factors: too few to part 20 topics)
    cluster_factors_per_cluster: int = 2

    def validate(self) -> ItemGraphConfig:
        if self.mode not in ITEM_GRAPH_MODES:
            raise UserError(f"ItemGraphConfig.mode must be one of {ITEM_GRAPH_MODES}, got "
                            f"{self.mode!r}")
        for name in ("dim", "window", "n_neighbours", "hidden_dim", "epochs", "batch_size",
                     "num_threads", "n_clusters", "cluster_restarts", "cluster_iterations"):
            if getattr(self, name) < 1:
                raise UserError(f"ItemGraphConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.mode == "clustered" and self.n_clusters >= self.dim:
            raise UserError(f"ItemGraphConfig.n_clusters ({self.n_clusters}) must be below dim "
                            f"({self.dim})")
        if self.cluster_factors_per_cluster < 0:
            raise UserError("ItemGraphConfig.cluster_factors_per_cluster must be >= 0, got "
                            f"{self.cluster_factors_per_cluster}")
        for name in ("session_gap_ms", "lr", "temperature", "output_norm"):
            if getattr(self, name) <= 0:
                raise UserError(f"ItemGraphConfig.{name} must be > 0, got {getattr(self, name)}")
        return self


def co_engagement_graph(
    user_id: np.ndarray,
    item_id: np.ndarray,
    action_type: np.ndarray,
    timestamp_ms: np.ndarray,
    n_items: int,
    window: int = 5,
    session_gap_ms: int = 30 * 60 * 1000,
) -> sp.csr_matrix:
    """Symmetric ``(n_items + 1, n_items + 1)`` co-engagement counts (no self loops).

    Inputs are ``(N,)`` event columns in (user, time) order (the dataset's order); only clicks
    and saves count.
    """
    positive = (action_type == int(ActionType.CLICK)) | (action_type == int(ActionType.SAVE))
    users, items, times = user_id[positive], item_id[positive], timestamp_ms[positive]
    order = np.lexsort((times, users))
    users, items, times = users[order], items[order], times[order]
    rows, cols = [], []
    for offset in range(1, window + 1):
        linked = ((users[offset:] == users[:-offset])
                  & (times[offset:] - times[:-offset] <= session_gap_ms)
                  & (items[offset:] != items[:-offset]))
        rows.append(items[:-offset][linked])
        cols.append(items[offset:][linked])
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    col = np.concatenate(cols) if cols else np.empty(0, np.int64)
    size = n_items + 1
    counts = sp.coo_matrix((np.ones(len(row), np.float32), (row, col)), shape=(size, size))
    return (counts + counts.T).tocsr()


def neighbour_matrix(graph: sp.csr_matrix, n_neighbours: int) -> sp.csr_matrix:
    """Row-stochastic ``P``: each row keeps its ``n_neighbours`` heaviest edges, normalised
    to sum to 1 (importance pooling); rows without edges stay empty."""
    coo = graph.tocoo()
    if coo.nnz == 0:
        return sp.csr_matrix(graph.shape, dtype=np.float32)
    # vectorised top-n per row: sort by (row, weight descending), rank within the row
    order = np.lexsort((-coo.data, coo.row))
    rows, cols, vals = coo.row[order], coo.col[order], coo.data[order]
    starts = np.searchsorted(rows, rows, side="left")
    keep = np.arange(len(rows)) - starts < n_neighbours
    rows, cols, vals = rows[keep], cols[keep], vals[keep].astype(np.float64)
    totals = np.bincount(rows, weights=vals, minlength=graph.shape[0])
    return sp.csr_matrix(((vals / totals[rows]).astype(np.float32), (rows, cols)),
                         shape=graph.shape)


def graph_features(content: np.ndarray, graph: sp.csr_matrix, n_neighbours: int) -> np.ndarray:
    """``(n_items + 1, 3E + 1)`` encoder input: ``[x, P x, P^2 x, log1p(degree)]``, each
    column standardised over the real items (row 0, the padding id, stays zero)."""
    pool = neighbour_matrix(graph, n_neighbours)
    hop1 = pool @ content
    hop2 = pool @ hop1
    degree = np.log1p(np.asarray(graph.sum(axis=1)).ravel())[:, None]
    feats = np.concatenate([content, hop1, hop2, degree], axis=1).astype(np.float32)
    real = feats[1:]
    feats[1:] = (real - real.mean(axis=0)) / (real.std(axis=0) + 1e-6)
    feats[0] = 0.0
    return feats


class ItemGraphEncoder(nn.Module):
    """``(N, 3E + 1)`` graph features -> ``(N, dim)`` vectors of norm ``output_norm``."""

    def __init__(self, in_dim: int, cfg: ItemGraphConfig) -> None:
        super().__init__()
        self.output_norm = cfg.output_norm
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU(),
            nn.Linear(cfg.hidden_dim, cfg.dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(feats), dim=-1) * self.output_norm


@dataclass
class ItemGraphResult:
    embeddings: np.ndarray  # (n_items + 1, dim) float32, row 0 (padding) zero
    n_edges: int
    n_items_with_neighbours: int
    final_loss: float


def propagate_content(content: np.ndarray, graph: sp.csr_matrix, cfg: ItemGraphConfig
                      ) -> np.ndarray:
    """``(n_items + 1, E)``: ``(x + P x + P^2 x) / 3`` rescaled to norm ``output_norm``
    (items without neighbours keep their content direction); row 0 stays zero."""
    pool = neighbour_matrix(graph, cfg.n_neighbours)
    hop1 = pool @ content
    hop2 = pool @ hop1
    has = (np.diff(pool.indptr) > 0)[:, None]
    mixed = np.where(has, (content + hop1 + hop2) / 3.0, content).astype(np.float32)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    mixed = mixed / np.maximum(norms, 1e-12) * cfg.output_norm
    mixed[0] = 0.0
    return mixed


def impression_factors(user_id: np.ndarray, item_id: np.ndarray, n_items: int, dim: int,
                       seed: int = 0) -> np.ndarray:
    """``(n_items + 1, dim)`` spectral item factors of the user x item impression matrix.

    ``A[u, i] = 1`` when user ``u`` was shown item ``i`` at least once (``(N,)`` event columns;
    any user ids, remapped here). With ``D_u``, ``D_i`` the degrees, the factors are
    ``V_k * sqrt(s_k)`` of the singular value decomposition of ``D_u^-1/2 A D_i^-1/2``,
    ``k = 2 .. dim + 1``: the first pair is the degree (popularity) direction and carries no
    similarity, so it is dropped. Items shown to the same users get close vectors: what the
    logging policy and the users' own browsing put together, a much denser signal than
    co-engagements (about 10 impressions per engagement). Items never shown (and row 0) are
    zero; with fewer users or items than ``dim + 2`` the missing columns are zero too.
    Deterministic (ARPACK's start vector is seeded).
    """
    out = np.zeros((n_items + 1, dim), dtype=np.float32)
    if len(user_id) == 0:
        return out
    users, user_index = np.unique(np.asarray(user_id), return_inverse=True)
    items = np.asarray(item_id, dtype=np.int64)
    matrix = sp.coo_matrix((np.ones(len(items)), (user_index, items)),
                           shape=(len(users), n_items + 1)).tocsr()
    matrix.data[:] = 1.0  # shown at least once (duplicates were summed)
    user_degree = np.asarray(matrix.sum(axis=1)).ravel()
    item_degree = np.asarray(matrix.sum(axis=0)).ravel()
    normalised = (sp.diags(1.0 / np.sqrt(np.maximum(user_degree, 1.0))) @ matrix
                  @ sp.diags(1.0 / np.sqrt(np.maximum(item_degree, 1.0))))
    k = min(dim + 1, min(normalised.shape) - 1)
    if k < 2:
        return out
    from scipy.sparse.linalg import svds

    start = np.random.default_rng(seed).standard_normal(min(normalised.shape))
    _, values, vt = svds(normalised, k=k, v0=start)
    order = np.argsort(-values)[1:]  # drop the degree direction
    factors = vt[order].T * np.sqrt(values[order])
    factors[item_degree == 0] = 0.0
    out[:, : factors.shape[1]] = factors
    out[0] = 0.0
    return out


def _rescale(vectors: np.ndarray, norm: float) -> np.ndarray:
    """Rows rescaled to ``norm`` (zero rows stay zero)."""
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(lengths > 0, vectors / np.maximum(lengths, 1e-12) * norm,
                    0.0).astype(np.float32)


def spectral_item_vectors(content: np.ndarray, user_id: np.ndarray, item_id: np.ndarray,
                          graph: sp.csr_matrix, cfg: ItemGraphConfig) -> np.ndarray:
    """``(n_items + 1, cfg.dim)`` vectors of the ``spectral`` / ``spectral_propagated`` modes
    (rows of norm ``output_norm``; items never shown fall back to their propagated content
    vector in ``spectral_propagated`` and are zero in ``spectral``)."""
    n_items = len(content) - 1
    if cfg.mode == "spectral":
        emb = _rescale(impression_factors(user_id, item_id, n_items, cfg.dim, cfg.seed),
                       cfg.output_norm)
    else:
        half = cfg.dim // 2
        spectral = _rescale(impression_factors(user_id, item_id, n_items, cfg.dim - half,
                                               cfg.seed), 1.0)
        propagated = propagate_content(content, graph, cfg)[1:].astype(np.float64)
        centred = propagated - propagated.mean(axis=0)
        _, _, directions = np.linalg.svd(centred, full_matrices=False)
        leading = np.zeros((n_items + 1, half), dtype=np.float32)
        leading[1:, : min(half, len(directions))] = centred @ directions[:half].T
        emb = np.concatenate([_rescale(leading, 1.0), spectral], axis=1)
        emb = _rescale(emb, cfg.output_norm)
    emb[0] = 0.0
    return emb


def clustered_item_vectors(vectors: np.ndarray, cfg: ItemGraphConfig,
                           cluster_input: np.ndarray | None = None) -> np.ndarray:
    """``(n_items + 1, cfg.dim)`` vectors of the ``clustered`` mode from ``vectors``
    ``(n_items + 1, cfg.dim)`` (the ``spectral_propagated`` ones; row 0 is padding): the
    rows of ``cluster_input`` ``(n_items + 1, C)`` (default ``vectors``), unit-normed, are
    clustered by k-means into ``cfg.n_clusters``; each output row is its one-hot cluster
    (weight 1) beside the first ``dim - n_clusters`` dimensions of its unit ``vectors`` row
    (weight 0.5), rescaled to ``output_norm``. Deterministic for ``cfg.seed``."""
    unit = _unit_rows(vectors[1:])
    points = unit if cluster_input is None else _unit_rows(cluster_input[1:])
    labels = kmeans_labels(points, cfg.n_clusters, cfg.cluster_restarts,
                           cfg.cluster_iterations, cfg.seed)
    onehot = np.zeros((len(unit), cfg.n_clusters))
    onehot[np.arange(len(unit)), labels] = 1.0
    rows = np.concatenate([onehot, 0.5 * unit[:, : cfg.dim - cfg.n_clusters]], axis=1)
    out = np.zeros((len(vectors), cfg.dim), dtype=np.float32)
    out[1:] = _rescale(rows, cfg.output_norm)
    return out


def kmeans_labels(points: np.ndarray, n_clusters: int, restarts: int, iterations: int,
                  seed: int) -> np.ndarray:
    """``(N,)`` cluster of each row of ``points`` ``(N, C)``: the best by inertia of
    ``restarts`` k-means++ runs (seeds ``seed``, ``seed + 1``, ...) of ``iterations`` Lloyd
    steps; never more clusters than distinct rows (a tiny or look-alike catalogue)."""
    from scipy.cluster.vq import kmeans2

    n_clusters = min(n_clusters, len(np.unique(points.round(9), axis=0)))
    best: tuple[float, np.ndarray] | None = None
    for restart in range(restarts):
        with warnings.catch_warnings():  # an empty cluster leaves a one-hot column unused
            warnings.filterwarnings("ignore", message="One of the clusters is empty")
            centres, labels = kmeans2(points, n_clusters, iter=iterations, seed=seed + restart,
                                      minit="++")
        inertia = float(((points - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels)
    assert best is not None
    return best[1]


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cluster_features(content: np.ndarray, user_id: np.ndarray, item_id: np.ndarray,
                     graph: sp.csr_matrix, cfg: ItemGraphConfig) -> np.ndarray:
    """``(n_items + 1, F + E)`` what the ``clustered`` mode clusters: ``F =
    cluster_factors_per_cluster * n_clusters`` unit-normed impression factors beside the
    unit-normed propagated content vectors (on the demo world: 20-topic purity of 20
    k-means clusters 0.90 vs 0.86 for the ``spectral_propagated`` vectors; 0.97 vs 0.955
    weighted by impressions)."""
    n_items = len(content) - 1
    factors = impression_factors(user_id, item_id, n_items,
                                 cfg.cluster_factors_per_cluster * cfg.n_clusters, cfg.seed)
    propagated = propagate_content(content, graph, cfg)
    return np.concatenate([_rescale(factors, 1.0), _rescale(propagated, 1.0)], axis=1)


def train_item_embeddings(content: np.ndarray, graph: sp.csr_matrix, cfg: ItemGraphConfig,
                          impressions: tuple[np.ndarray, np.ndarray] | None = None
                          ) -> ItemGraphResult:
    """Learn item vectors from ``content`` ``(n_items + 1, E)`` and the co-engagement
    ``graph`` (and, for the spectral modes, the training window's ``impressions``: ``(N,)``
    user and item ids); deterministic for a seed and thread count."""
    cfg.validate()
    n_with_neighbours = int((np.diff(graph.indptr) > 0).sum())
    if cfg.mode in IMPRESSION_MODES:
        if impressions is None:
            raise UserError(f"item vectors of mode {cfg.mode!r} need the impressions")
        # spectral_item_vectors makes spectral_propagated vectors for every mode but spectral
        embeddings = spectral_item_vectors(content, impressions[0], impressions[1], graph, cfg)
        if cfg.mode == "clustered":
            features = (None if cfg.cluster_factors_per_cluster == 0 else
                        cluster_features(content, impressions[0], impressions[1], graph, cfg))
            embeddings = clustered_item_vectors(embeddings, cfg, features)
        return ItemGraphResult(
            embeddings=embeddings,
            n_edges=int(sp.triu(graph, k=1).nnz), n_items_with_neighbours=n_with_neighbours,
            final_loss=float("nan"))
    if cfg.mode == "propagated":
        return ItemGraphResult(embeddings=propagate_content(content, graph, cfg),
                               n_edges=int(sp.triu(graph, k=1).nnz),
                               n_items_with_neighbours=n_with_neighbours,
                               final_loss=float("nan"))
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    feats = torch.from_numpy(graph_features(content, graph, cfg.n_neighbours))
    model = ItemGraphEncoder(feats.shape[1], cfg)
    upper = sp.triu(graph, k=1).tocoo()
    pairs = np.stack([upper.row, upper.col], axis=1)
    cumulative = np.cumsum(upper.data, dtype=np.float64)
    loss_value = float("nan")
    if len(pairs):
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        steps = max(1, cfg.epochs * int(np.ceil(len(pairs) / cfg.batch_size)))
        for _ in range(steps):
            # pairs drawn in proportion to their co-engagement counts
            draws = rng.random(cfg.batch_size) * cumulative[-1]
            batch = pairs[np.minimum(np.searchsorted(cumulative, draws, side="right"),
                                     len(pairs) - 1)]
            left = model(feats[batch[:, 0]])
            right = model(feats[batch[:, 1]])
            logits = left @ right.T / (cfg.output_norm ** 2 * cfg.temperature)
            # an item may appear twice in a batch: only the pair's own partner is positive
            target = torch.arange(len(batch))
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
    model.eval()
    with torch.no_grad():
        emb = model(feats).numpy().astype(np.float32)
    emb[0] = 0.0
    return ItemGraphResult(embeddings=emb, n_edges=len(pairs),
                           n_items_with_neighbours=int((np.diff(graph.indptr) > 0).sum()),
                           final_loss=loss_value)


def item_vectors_from_events(content: np.ndarray, user_id: np.ndarray, item_id: np.ndarray,
                             action_type: np.ndarray, timestamp_ms: np.ndarray,
                             cfg: ItemGraphConfig,
                             impressions: tuple[np.ndarray, np.ndarray] | None = None
                             ) -> ItemGraphResult:
    """Item vectors ``(n_items + 1, dim)`` from ``content`` ``(n_items + 1, E)`` and the
    ``(N,)`` event columns the caller chose (the training window only: later engagements must
    not shape the vectors the model is evaluated with). The co-engagement graph reads the
    clicks and saves among them; the spectral modes read ``impressions`` (``(M,)`` user and
    item ids of every impression of the window), by default the events' own ids (then pass
    the skips too)."""
    graph = co_engagement_graph(user_id, item_id, action_type, timestamp_ms, len(content) - 1,
                                cfg.window, cfg.session_gap_ms)
    return train_item_embeddings(content, graph, cfg, impressions=impressions or (user_id,
                                                                                  item_id))


def write_item_graph(examples_dir: Path | str, result: ItemGraphResult, cfg: ItemGraphConfig,
                     extra: dict[str, Any], refit: bool = False) -> dict[str, Any]:
    """Write ``examples_dir/item_graph.parquet`` (``item_id``, ``graph_emb``) and the summary
    ``item_graph.json`` (``extra`` + edges, items, config); return the summary. ``refit``:
    write ``item_graph_refit.parquet`` / ``.json`` instead (vectors of the window through the
    test start)."""
    examples_dir = Path(examples_dir)
    emb = result.embeddings
    ids = np.arange(1, len(emb), dtype=np.int64)
    table = pa.table({
        "item_id": pa.array(ids),
        "graph_emb": pa.FixedSizeListArray.from_arrays(
            pa.array(emb[1:].ravel(), pa.float32()), emb.shape[1]),
    })
    pq.write_table(table, examples_dir / (GRAPH_REFIT_FILE if refit else GRAPH_FILE),
                   compression="zstd")
    summary = {**extra, "edges": result.n_edges, "items": int(len(ids)),
               "items_with_neighbours": result.n_items_with_neighbours,
               "final_loss": result.final_loss, "config": asdict(cfg)}
    (examples_dir / (GRAPH_REFIT_SUMMARY_FILE if refit else GRAPH_SUMMARY_FILE)).write_text(
        json.dumps(summary, indent=1, default=float))
    return summary
