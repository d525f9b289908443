"""The serving inference engine: exact to the trained :class:`~transact.model.ranker.Pinnability`,
much cheaper per candidate.

One ranking request = one user (one realtime sequence, one batch embedding, one request time)
and ``C`` candidates. The plain eval-mode model scores it as ``C`` rows that each carry a copy of
the sequence. This engine computes, for the TransAct encoder (transformer, concat fusion, no
learned positions, no candidate-similarity channel), the same numbers with every piece of work
that depends only on the sequence done **once per request**.

The exact rewrite (derivation, for one head; heads are independent until the output projection)
-------------------------------------------------------------------------------------------------

Token ``i`` of candidate ``c`` is ``t_i = [s_i, c]`` with ``s_i = [action_emb(a_i), e_i]`` (the
sequence part, ``A + E`` wide) and ``c`` the candidate's item vector (``E``). Split the first
layer's in-projection ``W = [W_s | W_c]``:

1. **Q/K/V**: ``q_i = Qs_i + qc``, ``k_j = Ks_j + kc``, ``v_j = Vs_j + vc`` where
   ``Qs/Ks/Vs = s W_s^T + b`` are shared ``(L, d)`` matrices and ``qc = W_qc c`` (etc.) are one
   vector per candidate.
2. **Scores**: ``q_i . k_j = Qs_i.Ks_j + qc.Ks_j + (Qs_i.kc + qc.kc)``. The bracket does not
   depend on ``j``: the softmax over ``j`` cancels it exactly. So the logits are
   ``S_ij + r_j`` with ``S = Qs Ks^T / sqrt(d_h)`` shared ``(L, L)`` and
   ``r = Ks (W_qc c) / sqrt(d_h) = M c``, ``M = Ks W_qc / sqrt(d_h)`` shared ``(L, E)``: per
   candidate an ``(L, E)`` product instead of ``L (3d, d)`` projections plus ``Q K^T``.
3. **Values**: rows of ``P = softmax(S + r)`` sum to one, so ``P (Vs + 1 vc^T) = P Vs + vc``.
4. **Output projection** is linear: ``W_o (P Vs + vc) + b_o = P (Vs W_o^T) + (W_o W_vc) c + b_o``.
   ``Vo = Vs W_o^T`` ``(L, d)`` and ``U = W_o W_vc`` ``(d, E)`` are shared; per candidate
   there is one ``(L, L) x (L, d)`` product - and since ``Vo`` is the same for every candidate,
   all candidates' ``P`` stack into **one** ``(C L, L) x (L, d)`` GEMM.
6. **The similarity channel** (``candidate_similarity``): token ``i`` also carries
   ``g_i = cos(e_i, c)``, one scalar per (candidate, token), with in-projection columns
   ``w_q, w_k, w_v`` (per head). The logits gain the terms that depend on ``j``:
   ``g_j (Qs_i.w_k + qc.w_k) + g_i g_j (w_q.w_k) + g_i (w_q.Ks_j)``: outer products of the
   ``(C, L)`` similarities with shared ``(L,)`` vectors and one ``(C,)`` vector per head
   (``qc.w_k = c . (W_qc^T w_k)``); the values gain ``(P g) (W_o w_v)`` and the residual
   ``g_i``. Still exact, still one shared GEMM for ``P Vo``.
7. The residual ``t_i + out`` is followed by LayerNorm, which is non-linear per (candidate,
   token): from there on (the first layer's FFN, every later layer, the output compression,
   the DCN v2 cross layers, the MLP) the work is per candidate. This is where the exact rewrite
   stops.
8. **The similarity pool** (``similarity_pool``) needs only the ``(C, L)`` cosines of step 6,
   the shared action types and one shared recency flag per slot (``seq_recent``, packed with
   the request): the same :func:`~transact.model.encoder.similarity_pool` as the model.

Per candidate and ``L = 100``, ``d = 96``, FFN 32: the plain first layer costs about 12.4 MFLOP
(in-projection 5.5, ``QK^T`` 1.9, ``PV`` 1.9, out-projection 1.8, FFN 1.2); the rewritten one
about 3.2 (``PV`` 1.9, FFN 1.2, ``r`` 0.006): the encoder goes from about 24.8 to 15.6 MFLOP.
The shared per-request work is ``O(L d^2 + L^2 d)`` once.

What else the engine does (the paper's serving recipe, see ``docs/serving.md``):

* **one fused lookup**: sequence items and candidates are gathered from the item-vector table
  with a single ``take`` into the request's buffer;
* **one contiguous host buffer, one device copy**: every input of a request (floats and ints)
  is packed into one byte buffer (pinned on CUDA) and moved with one ``copy_``; the device-side
  tensors are views of it (:class:`PackedLayout`);
* **bucketed shapes**: with ``bucketed=True`` the sequence is padded to a length bucket (masked
  keys) and the candidates to a count bucket, so a handful of static shapes serve every
  request - what CUDA graphs need (:class:`CudaGraphRunner`, used only when
  ``torch.cuda.is_available()``); on CPU the exact-length path is fastest and the default;
* ``torch.inference_mode``, fused ``scaled_dot_product_attention`` for later layers,
  candidates in cache-sized chunks.

Other encoder kinds / fusions (the ablation baselines) fall back to the model's own
``forward(batch, shared_sequence=True)``: exact by construction.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transact.data.counters import COUNTER_NAMES, N_COUNTER_FEATURES, counter_features
from transact.model.encoder import similarity_pool
from transact.model.features import (
    NUMERIC_FEATURES,
    RankingBatch,
    hash_item_ids,
    make_batch,
    sequence_numeric_features,
)
from transact.model.ranker import Pinnability
from transact.schema import HOUR_MS

#: default candidate-count buckets (the padded shapes of the bucketed / CUDA-graph path)
CANDIDATE_BUCKETS: tuple[int, ...] = (16, 64, 128, 256, 512, 1024, 2048)
#: default sequence-length buckets
LENGTH_BUCKETS: tuple[int, ...] = (8, 16, 32, 64, 100)


@dataclass
class EngineConfig:
    """How the engine runs (all paths are exact; these trade speed only).

    * ``chunk_size``: candidates per chunk of the per-candidate work (cache-sized).
    * ``threads``: intra-op threads (0 = leave torch's setting).
    * ``bucketed``: pad sequence length / candidate count to buckets (static shapes; the
      CUDA-graph path needs it, CPU does not).
    * ``cuda_graphs``: capture and replay one CUDA graph per bucket (only on a CUDA device).
    """

    device: str = "cpu"
    chunk_size: int = 32
    threads: int = 0
    #: threads scoring independent candidate chunks in parallel (CPU); use with
    #: ``threads=1`` so that each chunk's ops run on its own thread
    workers: int = 1
    bucketed: bool = False
    cuda_graphs: bool = True
    candidate_buckets: list[int] = field(default_factory=lambda: list(CANDIDATE_BUCKETS))
    length_buckets: list[int] = field(default_factory=lambda: list(LENGTH_BUCKETS))


@dataclass
class RequestInputs:
    """One ranking request on the host (numpy), before packing.

    ``seq_item_ids`` / ``seq_action_types`` / ``seq_timestamps_ms`` ``(S,)`` (newest first,
    zero-padded), ``user_emb`` ``(U,)`` float32, ``candidate_item_ids`` ``(C,)`` int64;
    ``item_counts`` ``(C, 4)`` / ``user_counts`` ``(4,)``: the engagement counters of the
    candidates and the user (read only by a model with ``use_engagement_counters``; ``None``:
    no events seen yet, i.e. zeros).
    """

    seq_item_ids: np.ndarray
    seq_action_types: np.ndarray
    seq_timestamps_ms: np.ndarray
    request_time_ms: int
    user_emb: np.ndarray
    candidate_item_ids: np.ndarray
    surface_id: int = 0
    item_counts: np.ndarray | None = None
    user_counts: np.ndarray | None = None

    def counter_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(item_counts (C, 4), user_counts (C, 4))`` int64, zeros where not given."""
        n = len(self.candidate_item_ids)
        width = len(COUNTER_NAMES)
        items = (np.zeros((n, width), np.int64) if self.item_counts is None
                 else np.asarray(self.item_counts, np.int64).reshape(n, width))
        user = (np.zeros(width, np.int64) if self.user_counts is None
                else np.asarray(self.user_counts, np.int64).reshape(width))
        return items, np.broadcast_to(user, (n, width))


def _align(offset: int, to: int = 64) -> int:
    return (offset + to - 1) // to * to


@dataclass
class PackedLayout:
    """Byte layout of one request's inputs in a single contiguous buffer.

    Float32 fields: ``seq_item_emb (L, E)``, ``cand_item_emb (C, E)``, ``user_emb (U,)``,
    ``numeric (F,)``, ``counters (C, K)`` (the engagement-counter features; ``K`` = 0 for
    a model without them); int64 fields: ``seq_actions (L,)``, ``seq_recent (L,)`` (1 where the
    action is younger than the similarity pool's recency scope), ``cand_bucket (C,)``,
    ``scalars (3,)`` = (surface id, hour of day, number of valid sequence slots). Each field
    starts on a 64-byte boundary.
    """

    length: int  # L (padded to a bucket on the bucketed path)
    n_candidates: int  # C (padded likewise)
    item_dim: int
    user_dim: int
    n_numeric: int
    n_counters: int = 0
    offsets: dict[str, tuple[int, torch.dtype, tuple[int, ...]]] = field(default_factory=dict)
    nbytes: int = 0

    def __post_init__(self) -> None:
        fields_: list[tuple[str, torch.dtype, tuple[int, ...]]] = [
            ("seq_item_emb", torch.float32, (self.length, self.item_dim)),
            ("cand_item_emb", torch.float32, (self.n_candidates, self.item_dim)),
            ("user_emb", torch.float32, (self.user_dim,)),
            ("numeric", torch.float32, (self.n_numeric,)),
            ("counters", torch.float32, (self.n_candidates, self.n_counters)),
            ("seq_actions", torch.int64, (self.length,)),
            ("seq_recent", torch.int64, (self.length,)),
            ("cand_bucket", torch.int64, (self.n_candidates,)),
            ("scalars", torch.int64, (3,)),
        ]
        offset = 0
        for name, dtype, shape in fields_:
            self.offsets[name] = (offset, dtype, shape)
            size = math.prod(shape) * (4 if dtype == torch.float32 else 8)
            offset = _align(offset + size)
        self.nbytes = offset

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of the fields inside ``buffer`` (a uint8 tensor of ``nbytes``)."""
        out = {}
        for name, (offset, dtype, shape) in self.offsets.items():
            size = math.prod(shape) * (4 if dtype == torch.float32 else 8)
            out[name] = buffer[offset:offset + size].view(dtype).view(shape)
        return out


def _bucket(value: int, buckets: list[int]) -> int:
    for size in sorted(buckets):
        if value <= size:
            return size
    return value  # beyond the largest bucket: its own shape


class RankingEngine:
    """Scores requests exactly like ``model`` in eval mode, sharing sequence work.

    ``item_table`` ``(N, E)`` float32: the item vectors the model was trained with (row = item
    id). :meth:`score` returns probabilities ``(C, H)`` in the model's head order.
    """

    def __init__(self, model: Pinnability, item_table: np.ndarray,
                 cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.device = torch.device(self.cfg.device)
        self.model = model.eval().to(self.device)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.item_table = np.ascontiguousarray(item_table, dtype=np.float32)
        enc = model.cfg.encoder
        # token features the rewrite does not rebuild (learned positions, an action-age
        # embedding) take the model's own exact path
        self.rewrite = (enc.kind == "transformer" and enc.fusion == "concat"
                        and enc.positional == "none"
                        and not getattr(enc, "action_age", False))
        self.similarity = bool(enc.candidate_similarity)
        self.split = enc.action_emb_dim + enc.item_emb_dim
        self.pin = self.device.type == "cuda"
        #: chunk workers: independent candidate chunks on separate threads, each running its
        #: ops single-threaded (no per-op barrier between threads, unlike intra-op threads)
        self.pool = (ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="engine")
                     if self.cfg.workers > 1 else None)
        self.graphs: CudaGraphRunner | None = None
        if (self.device.type == "cuda" and self.cfg.cuda_graphs and self.rewrite
                and torch.cuda.is_available()):
            self.graphs = CudaGraphRunner(self)

    # ------------------------------------------------------------------------- host side
    def visible_slots(self, req: RequestInputs) -> np.ndarray:
        """Indices ``(L,)`` of the sequence slots the encoder sees, newest first (eval mode:
        real actions strictly before the request, the encoder's action filter and length)."""
        enc = self.model.encoder
        usable = enc.usable(torch.tensor(np.asarray(req.seq_action_types, np.int64))[None],
                            torch.tensor(np.asarray(req.seq_timestamps_ms, np.int64))[None],
                            torch.tensor([int(req.request_time_ms)]))
        return np.flatnonzero(usable[0].numpy())

    def pack(self, req: RequestInputs, bucketed: bool | None = None
             ) -> tuple[PackedLayout, torch.Tensor, int, int]:
        """Pack one request into one host buffer: ``(layout, buffer, n_valid, n_candidates)``.

        One fused gather fetches the item vectors of the visible sequence and of every
        candidate. Padding slots (bucketed path) are zeros.
        """
        bucketed = self.cfg.bucketed if bucketed is None else bucketed
        cfg = self.model.cfg
        slots = self.visible_slots(req)
        n_valid = len(slots)
        cands = np.asarray(req.candidate_item_ids, np.int64)
        n_cand = len(cands)
        length = max(n_valid, 1)
        n_rows = n_cand
        if bucketed:
            length = _bucket(length, self.cfg.length_buckets)
            n_rows = _bucket(max(n_cand, 1), self.cfg.candidate_buckets)
        layout = PackedLayout(length, n_rows, cfg.item_emb_dim, cfg.user_emb_dim,
                              len(NUMERIC_FEATURES),
                              N_COUNTER_FEATURES if cfg.use_engagement_counters else 0)
        buffer = torch.zeros(layout.nbytes, dtype=torch.uint8, pin_memory=self.pin)
        views = layout.views(buffer)
        seq_ids = np.asarray(req.seq_item_ids, np.int64)[slots]
        ids = np.concatenate([seq_ids, cands])
        safe = np.where((ids >= 0) & (ids < len(self.item_table)), ids, 0)
        vectors = self.item_table.take(safe, axis=0)  # the one fused lookup
        views["seq_item_emb"].numpy()[:n_valid] = vectors[:n_valid]
        views["cand_item_emb"].numpy()[:n_cand] = vectors[n_valid:]
        views["user_emb"].numpy()[:] = np.asarray(req.user_emb, np.float32)
        actions = np.asarray(req.seq_action_types, np.int64)[None]
        stamps = np.asarray(req.seq_timestamps_ms, np.int64)[None]
        request_time = np.array([int(req.request_time_ms)], np.int64)
        views["numeric"].numpy()[:] = sequence_numeric_features(actions, stamps, request_time)[0]
        views["seq_actions"].numpy()[:n_valid] = actions[0, slots]
        recent_ms = self.model.cfg.encoder.similarity_recent_ms
        views["seq_recent"].numpy()[:n_valid] = (
            int(req.request_time_ms) - stamps[0, slots]) < recent_ms
        views["cand_bucket"].numpy()[:n_cand] = hash_item_ids(cands, cfg.item_id_buckets)
        if cfg.use_engagement_counters:
            views["counters"].numpy()[:n_cand] = counter_features(*req.counter_arrays())
        hour = (int(req.request_time_ms) // HOUR_MS) % 24
        surface = min(max(int(req.surface_id), 0), cfg.n_surfaces - 1)
        views["scalars"].numpy()[:] = (surface, hour, n_valid)
        return layout, buffer, n_valid, n_cand

    # ------------------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(self, req: RequestInputs) -> np.ndarray:
        """Probabilities ``(C, H)`` of one request (empty candidates: ``(0, H)``)."""
        n_heads = len(self.model.cfg.heads)
        if len(req.candidate_item_ids) == 0:
            return np.zeros((0, n_heads), np.float32)
        if not self.rewrite:
            return self._score_fallback(req)
        if self.graphs is not None:
            return self.graphs.score(req)
        layout, buffer, n_valid, n_cand = self.pack(req)
        device_buffer = buffer.to(self.device, non_blocking=True)  # the one host->device copy
        views = layout.views(device_buffer)
        logits = self.forward_packed(views, n_valid, masked=layout.length != max(n_valid, 1))
        return torch.sigmoid(logits[:n_cand]).float().cpu().numpy()

    def score_many(self, requests: list[RequestInputs]) -> list[np.ndarray]:
        """Score several requests (the dynamic batch of concurrent calls)."""
        return [self.score(req) for req in requests]

    def _score_fallback(self, req: RequestInputs) -> np.ndarray:
        batch = request_batch(req, self.item_table, self.model.cfg.item_id_buckets)
        return self.model.predict(batch.to(self.device), shared_sequence=True).cpu().numpy()

    def forward_packed(self, views: dict[str, torch.Tensor], n_valid: int,
                       masked: bool = False) -> torch.Tensor:
        """Logits ``(C, H)`` from the packed device views (``C`` = the layout's rows).

        ``n_valid``: visible sequence slots (the rest of the ``L`` slots are padding and, with
        ``masked=True``, masked out of attention, the first-K columns and the max pool).
        """
        model = self.model
        cfg = model.cfg
        cand = views["cand_item_emb"]
        n_rows = cand.shape[0]
        scalars = views["scalars"]
        shared_cat = torch.cat([model.surface_emb.weight[scalars[0]],
                                model.hour_emb.weight[scalars[1]]])  # (S + Hr,)
        shared = None
        if model.encoder.output_dim and n_valid > 0:
            valid = None
            if masked:  # from the buffer, so that a captured graph serves every valid count
                length = views["seq_actions"].shape[0]
                valid = torch.arange(length, device=cand.device) < scalars[2]
            shared = self.prepare_sequence(views["seq_actions"], views["seq_item_emb"], valid)
        def score_chunk(start: int) -> torch.Tensor:
            stop = min(start + self.cfg.chunk_size, n_rows)
            chunk = cand[start:stop]
            size = stop - start
            parts = [torch.cat([shared_cat[: cfg.surface_emb_dim].expand(size, -1),
                                model.item_id_emb(views["cand_bucket"][start:stop]),
                                shared_cat[cfg.surface_emb_dim:].expand(size, -1)], dim=1)]
            if cfg.use_sequence_stats:
                parts.append(views["numeric"].expand(size, -1))
            if model.encoder.output_dim:
                if shared is None:
                    parts.append(chunk.new_zeros((size, model.encoder.output_dim)))
                else:
                    encoded = self.encode_candidates(shared, chunk)
                    if cfg.encoder.similarity_pool:  # padded slots have action 0: no match
                        unit = model.encoder.pool_unit
                        sim = unit(chunk) @ unit(views["seq_item_emb"]).T  # (C, L)
                        seq_actions = views["seq_actions"][None]
                        encoded = torch.cat([encoded, similarity_pool(
                            sim, seq_actions, seq_actions > 0,
                            views["seq_recent"][None] > 0,
                            cfg.encoder.similarity_pool_thresholds)], dim=1)
                    parts.append(encoded)
            if cfg.use_batch_user_emb:
                parts.append(views["user_emb"].expand(size, -1))
            parts.append(chunk)
            if cfg.use_engagement_counters:
                parts.append(views["counters"][start:stop])
            if model.block_norms is not None:
                parts = [norm(part) for norm, part in zip(model.block_norms, parts, strict=True)]
            x0 = model.input_norm(torch.cat(parts, dim=1))
            x = x0
            for layer in model.cross:  # x0 * (W x + b) + x, in place
                x = layer.linear(x).mul_(x0).add_(x)
            return model.heads(model.mlp(x))

        starts = range(0, n_rows, self.cfg.chunk_size)
        if self.pool is not None and len(starts) > 1 and cand.device.type == "cpu":
            return torch.cat(list(self.pool.map(score_chunk, starts)))
        return torch.cat([score_chunk(start) for start in starts])

    # ------------------------------------------------------------------ the exact rewrite
    def prepare_sequence(self, seq_actions: torch.Tensor, seq_item_emb: torch.Tensor,
                         valid: torch.Tensor | None) -> SharedSequence:
        """The per-request work of the first layer (steps 1-4 of the module docstring).

        ``seq_actions (L,)``, ``seq_item_emb (L, E)``; ``valid (L,)`` bool, None = all valid.
        """
        enc = self.model.encoder
        first = enc.layers[0]
        n_heads = first.num_heads
        length = seq_actions.shape[0]
        d = first.in_proj.weight.shape[1]
        head_dim = d // n_heads
        split = self.split
        item_dim = seq_item_emb.shape[1]
        seq_part = torch.cat([enc.action_emb(seq_actions), seq_item_emb], dim=1)  # (L, A+E)
        if valid is not None:
            seq_part = seq_part * valid[:, None]
        w_in, b_in = first.in_proj.weight, first.in_proj.bias
        qkv = F.linear(seq_part, w_in[:, :split], b_in)  # (L, 3d)
        q_s, k_s, v_s = qkv.view(length, 3, n_heads, head_dim).permute(1, 2, 0, 3)  # (h, L, dh)
        scale = 1.0 / math.sqrt(head_dim)
        scores = (q_s @ k_s.transpose(1, 2)) * scale  # (h, L, L)
        w_qc = w_in[:d, split:split + item_dim].reshape(n_heads, head_dim, -1)  # (h, dh, E)
        key_bias = (k_s @ w_qc) * scale  # (h, L, E): r = key_bias @ c
        w_out = first.out_proj.weight  # (d, d)
        w_out_heads = w_out.view(d, n_heads, head_dim).permute(1, 2, 0)  # (h, dh, d)
        values_out = (v_s @ w_out_heads).reshape(n_heads * length, d)  # (h L, d)
        w_vc = w_in[2 * d:, split:split + item_dim]  # (d, E)
        cand_out = w_out @ w_vc  # (d, E)
        if valid is not None:
            scores = scores.masked_fill(~valid[None, None, :], -math.inf)
        sim = None
        if self.similarity:  # step 6: the cos(e_i, c) channel, the in-projection's last column
            w_q, w_k, w_v = w_in[:, -1].view(3, n_heads, head_dim)  # (h, dh) each
            sim = SimilarityTerms(
                seq_unit=F.normalize(seq_part[:, split - item_dim:split], dim=-1),  # (L, E)
                query_side=torch.einsum("hld,hd->hl", q_s, w_k) * scale,  # (h, L)
                key_side=torch.einsum("hld,hd->hl", k_s, w_q) * scale,  # (h, L)
                cand_side=torch.einsum("hde,hd->he", w_qc, w_k) * scale,  # (h, E)
                both=(w_q * w_k).sum(dim=1) * scale,  # (h,)
                value_out=torch.einsum("hdo,hd->ho", w_out_heads, w_v))  # (h, d)
        return SharedSequence(seq_part=seq_part, scores=scores,
                              key_bias=key_bias.reshape(n_heads * length, -1),
                              values_out=values_out, cand_out=cand_out,
                              out_bias=first.out_proj.bias, valid=valid, n_heads=n_heads,
                              length=length, sim=sim)

    def encode_candidates(self, shared: SharedSequence, cand: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(C, output_dim)`` for candidates ``cand (C, E)`` of one request."""
        enc = self.model.encoder
        ecfg = enc.cfg
        first = enc.layers[0]
        size = cand.shape[0]
        n_heads, length = shared.n_heads, shared.length
        key_bias = (cand @ shared.key_bias.T).view(size, n_heads, 1, length)  # (C, h, 1, L)
        logits = shared.scores[None] + key_bias  # (C, h, L, L)
        sim = shared.sim
        cos = None
        if sim is not None:
            cos = F.normalize(cand, dim=-1) @ sim.seq_unit.T  # (C, L); zero at padded slots
            cos_keys = cos[:, None, None, :]  # g_j
            cos_queries = cos[:, None, :, None]  # g_i
            per_query = (sim.query_side[None, :, :, None]  # Qs_i.w_k + qc.w_k + g_i w_q.w_k
                         + (cand @ sim.cand_side.T)[:, :, None, None]
                         + cos_queries * sim.both[None, :, None, None])
            logits = logits + cos_keys * per_query + cos_queries * sim.key_side[None, :, None, :]
        probs = torch.softmax(logits, dim=-1)  # (C, h, L, L)
        weighted_cos = None
        if cos is not None:
            weighted_cos = probs @ cos[:, None, :, None]  # (C, h, L, 1): P g per head
        probs = probs.permute(0, 2, 1, 3).reshape(size * length, n_heads * length)
        out = (probs @ shared.values_out).view(size, length, -1)  # (C, L, d): one GEMM
        out += F.linear(cand, shared.cand_out, shared.out_bias)[:, None, :]
        item_dim = cand.shape[1]
        out[:, :, : self.split] += shared.seq_part
        out[:, :, self.split:self.split + item_dim] += cand[:, None, :]
        if sim is not None and cos is not None and weighted_cos is not None:
            out += torch.einsum("chl,ho->clo", weighted_cos[..., 0], sim.value_out)
            out[:, :, -1] += cos
        hidden = first.norm1(out)
        hidden = first.norm2(first.linear2(first.linear1(hidden).relu_()).add_(hidden))
        mask = None if shared.valid is None else shared.valid[None, None, None, :]
        for layer in enc.layers[1:]:
            hidden = _layer_forward(layer, hidden, mask)
        return _compress(hidden, shared.valid, ecfg.first_k, ecfg.max_pool)


@dataclass
class SimilarityTerms:
    """Per-request tensors of the similarity channel (step 6; ``h`` heads, scaled by
    ``1 / sqrt(d_h)`` where they enter the logits).

    ``seq_unit (L, E)`` unit sequence item vectors (zero rows at padding), ``query_side (h, L)``
    ``Qs_i . w_k``, ``key_side (h, L)`` ``w_q . Ks_j``, ``cand_side (h, E)`` ``W_qc^T w_k``,
    ``both (h,)`` ``w_q . w_k``, ``value_out (h, d)`` ``W_o w_v`` per head.
    """

    seq_unit: torch.Tensor
    query_side: torch.Tensor
    key_side: torch.Tensor
    cand_side: torch.Tensor
    both: torch.Tensor
    value_out: torch.Tensor


@dataclass
class SharedSequence:
    """Per-request first-layer tensors (``L`` slots, ``h`` heads, width ``d``).

    ``seq_part (L, A+E)``, ``scores (h, L, L)``, ``key_bias (h L, E)``, ``values_out (h L, d)``,
    ``cand_out (d, E)``, ``out_bias (d,)``, ``valid (L,)`` bool or None (all valid).
    """

    seq_part: torch.Tensor
    scores: torch.Tensor
    key_bias: torch.Tensor
    values_out: torch.Tensor
    cand_out: torch.Tensor
    out_bias: torch.Tensor
    valid: torch.Tensor | None
    n_heads: int
    length: int
    sim: SimilarityTerms | None = None


def _layer_forward(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None
                   ) -> torch.Tensor:
    """One eval-mode transformer layer on ``(C, L, d)``; ``mask (1, 1, 1, L)`` bool keys."""
    size, length, d = hidden.shape
    n_heads = layer.num_heads
    qkv = layer.in_proj(hidden).view(size, length, 3, n_heads, d // n_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    attn = attn.transpose(1, 2).reshape(size, length, d)
    hidden = layer.norm1(layer.out_proj(attn).add_(hidden))
    return layer.norm2(layer.linear2(layer.linear1(hidden).relu_()).add_(hidden))


def _compress(hidden: torch.Tensor, valid: torch.Tensor | None, first_k: int, max_pool: bool
              ) -> torch.Tensor:
    """``(C, L, d)`` -> ``(C, (first_k + max_pool) d)``; padded slots never reach the output."""
    size, length, d = hidden.shape
    if valid is not None:
        hidden = hidden * valid[None, :, None]
    parts = []
    if first_k:
        head = hidden[:, :first_k]
        if length < first_k:
            head = torch.cat([head, hidden.new_zeros((size, first_k - length, d))], dim=1)
        parts.append(head.reshape(size, first_k * d))
    if max_pool:
        pooled = hidden if valid is None else hidden.masked_fill(~valid[None, :, None],
                                                                 -math.inf)
        parts.append(pooled.max(dim=1).values)
    return torch.cat(parts, dim=1)


class CudaGraphRunner:
    """CUDA graphs per (length bucket, candidate bucket): the packed buffer is copied into the
    graph's static input with one ``copy_`` and the captured forward is replayed.

    Only constructed when ``torch.cuda.is_available()``; ``bench/gpu_serving.py`` measures it
    against eager. Requests with an empty visible sequence run eagerly (a different program).
    """

    def __init__(self, engine: RankingEngine, warmup: int = 3) -> None:
        self.engine = engine
        self.warmup = warmup
        self.graphs: dict[tuple[int, int], tuple[Any, torch.Tensor, torch.Tensor, Any]] = {}

    def _capture(self, layout: PackedLayout) -> tuple[Any, ...]:
        static_in = torch.zeros(layout.nbytes, dtype=torch.uint8, device=self.engine.device)
        views = layout.views(static_in)
        views["scalars"][2] = 1  # any valid count >= 1: the mask is computed in the graph
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.engine.forward_packed(views, 1, masked=True)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = torch.sigmoid(self.engine.forward_packed(views, 1, masked=True))
        return graph, static_in, static_out, layout

    def score(self, req: RequestInputs) -> np.ndarray:
        engine = self.engine
        layout, buffer, n_valid, n_cand = engine.pack(req, bucketed=True)
        if n_valid == 0:
            views = layout.views(buffer.to(engine.device, non_blocking=True))
            logits = engine.forward_packed(views, 0, masked=True)
            return torch.sigmoid(logits[:n_cand]).cpu().numpy()
        # the valid count is data (read from the buffer inside the graph), not shape
        key = (layout.length, layout.n_candidates)
        if key not in self.graphs:
            self.graphs[key] = self._capture(layout)
        graph, static_in, static_out, _ = self.graphs[key]
        static_in.copy_(buffer, non_blocking=True)  # the one host->device copy
        graph.replay()
        return static_out[:n_cand].cpu().numpy()


# ------------------------------------------------------------------------------ reference
def request_batch(req: RequestInputs, item_table: np.ndarray, item_id_buckets: int
                  ) -> RankingBatch:
    """The plain formulation: ``C`` rows, each carrying the request's sequence."""
    cands = np.asarray(req.candidate_item_ids, np.int64)
    n = len(cands)

    def rep(values: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(values)[None], n, axis=0)

    item_counts, user_counts = req.counter_arrays()
    return make_batch(
        item_table=item_table, item_id=cands,
        request_time_ms=np.full(n, int(req.request_time_ms), np.int64),
        surface_id=np.full(n, int(req.surface_id), np.int64),
        seq_item_ids=rep(np.asarray(req.seq_item_ids, np.int64)),
        seq_action_types=rep(np.asarray(req.seq_action_types, np.int64)),
        seq_timestamps_ms=rep(np.asarray(req.seq_timestamps_ms, np.int64)),
        user_batch_emb=rep(np.asarray(req.user_emb, np.float32)),
        item_id_buckets=item_id_buckets,
        item_counts=item_counts,
        user_counts=np.ascontiguousarray(user_counts),
    )


@torch.inference_mode()
def reference_scores(model: Pinnability, req: RequestInputs, item_table: np.ndarray,
                     shared_sequence: bool = False) -> np.ndarray:
    """Probabilities ``(C, H)`` of the plain eval-mode model (the parity reference)."""
    model.eval()
    batch = request_batch(req, item_table, model.cfg.item_id_buckets)
    return torch.sigmoid(model(batch, shared_sequence=shared_sequence)).numpy()
