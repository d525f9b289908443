"""TransAct encoder behaviour: shapes, visibility rules, masking, padding, empty rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transact.model.config import SIMILARITY_POOL_DIM, EncoderConfig
from transact.model.encoder import SequenceEncoder
from transact.schema import HOUR_MS, ActionType

REQUEST_MS = 1_767_225_600_000
E = 32


def make_inputs(batch: int = 4, slots: int = 100, n_real: int | list[int] = 30, seed: int = 0,
                gap_ms: int = 10 * 60_000):
    """Sequences newest first: ``n_real`` actions spaced ``gap_ms`` apart before the request."""
    gen = torch.Generator().manual_seed(seed)
    counts = [n_real] * batch if isinstance(n_real, int) else n_real
    actions = torch.zeros(batch, slots, dtype=torch.int64)
    for row, count in enumerate(counts):
        actions[row, :count] = torch.randint(2, 5, (count,), generator=gen)
    ages = torch.arange(1, slots + 1, dtype=torch.int64)[None, :].repeat(batch, 1) * gap_ms
    ts = REQUEST_MS - ages
    ts = ts * (actions > 0)
    items = torch.randn(batch, slots, E, generator=gen) * (actions > 0)[:, :, None]
    request = torch.full((batch,), REQUEST_MS, dtype=torch.int64)
    cand = torch.randn(batch, E, generator=gen)
    return actions, items, ts, request, cand


def encoder(**kwargs) -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(EncoderConfig(**kwargs)).eval()


@pytest.mark.parametrize(
    ("kwargs", "columns", "width"),
    [({}, 11, 97), ({"candidate_similarity": False}, 11, 96), ({"fusion": "append"}, 11, 64),
     ({"first_k": 10, "max_pool": False}, 10, 97), ({"first_k": 0, "max_pool": True}, 1, 97),
     ({"kind": "cnn"}, 11, 97), ({"kind": "lstm"}, 11, 97), ({"kind": "avg"}, 1, 97)],
)
def test_output_width_is_k_plus_one_times_d(kwargs, columns, width) -> None:
    enc = encoder(**kwargs)
    out = enc(*make_inputs())
    pool = SIMILARITY_POOL_DIM  # the similarity pool's columns (on by default)
    assert out.shape == (4, columns * width + pool) == (4, enc.output_dim)
    assert encoder(**kwargs, similarity_pool=False).output_dim == columns * width


def test_future_actions_never_influence_the_output() -> None:
    actions, items, ts, request, cand = make_inputs(n_real=20)
    # bad data: three "actions" at or after the request time in the newest slots
    shifted = [torch.roll(t, 3, dims=1) for t in (actions, items, ts)]
    bad_actions, bad_items, bad_ts = shifted
    bad_actions[:, :3] = ActionType.SAVE
    bad_ts[:, :3] = REQUEST_MS + torch.tensor([0, 5, HOUR_MS])
    bad_items[:, :3] = 100.0
    for mode in (False, True):
        enc = encoder(dropout=0.0).train(mode)
        enc.set_mask_seed(3)
        clean = enc(actions, items, ts, request, cand)
        enc.set_mask_seed(3)
        dirty = enc(bad_actions, bad_items, bad_ts, request, cand)
        torch.testing.assert_close(clean, dirty)
        bad_items[:, :3] = -7.0  # changing their content changes nothing either
        enc.set_mask_seed(3)
        torch.testing.assert_close(clean, enc(bad_actions, bad_items, bad_ts, request, cand))


def test_time_window_mask_applies_in_training_only() -> None:
    actions, items, ts, request, cand = make_inputs(batch=64, n_real=100, gap_ms=20 * 60_000)
    enc = encoder(time_window_mode="drop", train_seq_len=None)
    usable = actions > 0
    assert torch.equal(enc.visibility(actions, ts, request), usable)  # eval: nothing masked
    enc.train()
    enc.set_mask_seed(0)
    visible = enc.visibility(actions, ts, request)
    hidden = usable & ~visible
    assert hidden.any(), "the window must hide recent actions in training"
    age = request[:, None] - ts
    assert (age[hidden] < 24 * HOUR_MS).all(), "only actions inside the 24 h window are hidden"
    # per row the hidden actions are exactly a prefix of the newest ones (a time window)
    first_visible = visible.to(torch.int8).argmax(dim=1)
    slots = torch.arange(actions.shape[1])[None, :]
    assert torch.equal(hidden, usable & (slots < first_visible[:, None]))
    # outputs differ between train (masked) and eval; the switch turns the mask off
    enc_off = encoder(time_window_mask=False, train_seq_len=None).train()
    assert torch.equal(enc_off.visibility(actions, ts, request), usable)
    # seeded: the same seed draws the same mask
    enc.set_mask_seed(0)
    assert torch.equal(enc.visibility(actions, ts, request), visible)


def test_window_never_masks_a_whole_row_keeps_the_oldest_action() -> None:
    # every action within the last 5 minutes: a 24 h window empties most rows
    actions, items, ts, request, cand = make_inputs(batch=200, n_real=[1, 2, 5, 30] * 50,
                                                    gap_ms=10_000)
    enc = encoder(time_window_mode="drop").train()
    enc.set_mask_seed(1)
    visible = enc.visibility(actions, ts, request)
    usable = actions > 0
    assert visible.any(dim=1).all()
    n_real = usable.sum(dim=1)
    only_one = visible.sum(dim=1) == 1
    assert only_one.sum() > 150  # most rows were emptied by the window ...
    oldest = n_real - 1
    kept_slot = visible.to(torch.int8).argmax(dim=1)
    assert torch.equal(kept_slot[only_one & (n_real > 1)], oldest[only_one & (n_real > 1)])
    assert torch.isfinite(enc(actions, items, ts, request, cand)).all()


@pytest.mark.parametrize("kind", ["transformer", "cnn", "lstm", "rnn", "avg"])
def test_padding_does_not_change_the_output(kind: str) -> None:
    actions, items, ts, request, cand = make_inputs(n_real=[3, 17, 40, 100])
    enc = encoder(kind=kind)
    out = enc(actions, items, ts, request, cand)
    # change pad-slot contents: item embeddings and timestamps of padding slots
    pad = actions == 0
    junk_items = torch.where(pad[:, :, None], torch.full_like(items, 9.0), items)
    junk_ts = torch.where(pad, request[:, None] - 1, ts)
    torch.testing.assert_close(enc(actions, junk_items, junk_ts, request, cand), out)
    # extra padding slots at the end
    wide = [torch.cat([t, torch.zeros_like(t)[:, :30]], dim=1) for t in (actions, items, ts)]
    torch.testing.assert_close(enc(wide[0], wide[1], wide[2], request, cand), out)


@pytest.mark.parametrize("kind", ["transformer", "cnn", "lstm", "rnn", "avg"])
@pytest.mark.parametrize("fusion", ["concat", "append"])
def test_no_nan_with_empty_or_short_sequences(kind: str, fusion: str) -> None:
    actions, items, ts, request, cand = make_inputs(batch=4, n_real=[0, 1, 2, 0])
    enc = encoder(kind=kind, fusion=fusion, positional="learned")
    for mode in (False, True):
        enc.train(mode)
        out = enc(actions, items, ts, request, cand)
        assert torch.isfinite(out).all()
        out.square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
        enc.zero_grad()
    if fusion == "concat":  # an empty history encodes to the zero vector
        enc.eval()
        out = enc(actions, items, ts, request, cand)
        assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1]) > 0


def test_positive_only_and_sequence_length_limit_visibility() -> None:
    actions, items, ts, request, cand = make_inputs(n_real=50)
    positive = encoder(actions="positive").visibility(actions, ts, request)
    assert torch.equal(positive, (actions == ActionType.CLICK) | (actions == ActionType.SAVE))
    short = encoder(seq_len=8).visibility(actions, ts, request)
    assert torch.equal(short, torch.arange(100)[None, :].expand(4, -1) < 8)
    out = encoder(seq_len=8)(actions, items, ts, request, cand)
    # changing an action older than the newest 8 does not matter
    items2 = items.clone()
    items2[:, 20] += 5.0
    torch.testing.assert_close(encoder(seq_len=8)(actions, items2, ts, request, cand), out)


def test_hide_and_save_of_the_same_item_are_different_tokens() -> None:
    actions, items, ts, request, cand = make_inputs(n_real=10)
    enc = encoder()
    saved = actions.clone()
    saved[:, 0] = ActionType.SAVE
    hidden = actions.clone()
    hidden[:, 0] = ActionType.HIDE
    assert not torch.allclose(enc(saved, items, ts, request, cand),
                              enc(hidden, items, ts, request, cand))


def test_matches_torch_transformer_encoder_on_full_sequences() -> None:
    """Our layer is the standard post-norm encoder layer: same weights, same outputs."""
    actions, items, ts, request, cand = make_inputs(batch=3, n_real=100)
    enc = encoder()
    visible = enc.visibility(actions, ts, request)
    tokens, attend = enc.tokens(actions, items, cand, visible)
    reference = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(enc.cfg.d_model, 1, 32, 0.1, batch_first=True), 2,
        enable_nested_tensor=False).eval()
    for ours, ref in zip(enc.layers, reference.layers, strict=True):
        ref.self_attn.in_proj_weight.data.copy_(ours.in_proj.weight)
        ref.self_attn.in_proj_bias.data.copy_(ours.in_proj.bias)
        ref.self_attn.out_proj.load_state_dict(ours.out_proj.state_dict())
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())
    hidden = tokens
    for layer in enc.layers:
        hidden = layer(hidden, attend)
    torch.testing.assert_close(hidden, reference(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positional", ["none", "learned"])
@pytest.mark.parametrize("n_real", [0, 7, 100])
@pytest.mark.parametrize("similarity", [False, True])
def test_shared_first_layer_rewrite_is_exact(positional: str, n_real: int,
                                             similarity: bool) -> None:
    """One request, many candidates: computing the sequence-side projections once per request
    gives the same output as the per-candidate encoder (also with the similarity channel)."""
    actions, items, ts, request, _ = make_inputs(batch=1, n_real=n_real)
    cands = torch.randn(230, E, generator=torch.Generator().manual_seed(4))
    enc = encoder(positional=positional, candidate_similarity=similarity,
                  similarity_pool=similarity)
    expected = enc(actions.expand(230, -1), items.expand(230, -1, -1), ts.expand(230, -1),
                   request.expand(230), cands)
    shared = enc.forward_shared(actions[0], items[0], ts[0], request[0], cands, chunk_size=64)
    torch.testing.assert_close(shared, expected, atol=2e-5, rtol=1e-5)


def test_keys_mode_window_hides_actions_from_attention_only_in_training() -> None:
    """``time_window_mode="keys"``: recent actions stay in the output columns but no token
    attends to them; the newest action always stays a key; evaluation masks nothing."""
    actions, items, ts, request, cand = make_inputs(n_real=30, gap_ms=10 * 60_000)
    enc = encoder(time_window_mode="keys", time_window_ms=24 * HOUR_MS, dropout=0.0,
                  similarity_pool=False).train()  # output = d-wide columns only
    enc.set_mask_seed(5)
    visible = enc.visibility(actions, ts, request)
    assert torch.equal(visible, enc.usable(actions, ts, request))  # nothing dropped
    tokens, attend = enc.tokens(actions, items, cand, visible)
    enc.set_mask_seed(5)
    keys = enc.window_keys(ts, request, visible, attend)
    assert keys[:, 0].all()  # the newest action is always a key
    assert (keys & ~attend).sum() == 0 and (attend & ~keys).any()  # some recent ones are not
    # changing a masked (non-key) action's content changes only its own output column
    row, slot = torch.nonzero(attend & ~keys)[0].tolist()
    enc.set_mask_seed(5)
    before = enc(actions, items, ts, request, cand)
    changed = items.clone()
    changed[row, slot] += 3.0
    enc.set_mask_seed(5)
    after = enc(actions, changed, ts, request, cand)
    d = enc.cfg.d_model
    differs = (before[row] - after[row]).abs().reshape(-1, d).sum(dim=1) > 1e-6
    assert differs[slot] if slot < enc.cfg.first_k else True
    assert not differs[: enc.cfg.first_k][torch.arange(enc.cfg.first_k) != slot].any()
    enc.eval()
    assert torch.equal(enc.window_keys(ts, request, visible, attend), attend)


def test_train_seq_len_caps_training_sequences_only() -> None:
    actions, items, ts, request, cand = make_inputs(n_real=60)
    enc = encoder(train_seq_len=16, time_window_mask=False)
    assert int(enc.visibility(actions, ts, request).sum(dim=1).max()) == 60
    enc.train()
    assert int(enc.visibility(actions, ts, request).sum(dim=1).max()) == 16


def test_similarity_channel_is_the_cosine_of_item_and_candidate() -> None:
    actions, items, ts, request, cand = make_inputs(batch=2, n_real=5)
    enc = encoder(candidate_similarity=True)
    assert enc.cfg.d_model == 32 + 2 * E + 1
    visible = enc.visibility(actions, ts, request)
    tokens, attend = enc.tokens(actions, items, cand, visible)
    expected = torch.nn.functional.cosine_similarity(items[:, :5], cand[:, None, :], dim=2)
    torch.testing.assert_close(tokens[:, :5, -1], expected, atol=1e-6, rtol=1e-5)


def test_similarity_pool_reads_the_type_and_recency_of_similar_actions() -> None:
    """A save of the candidate itself 5 minutes ago: the save columns of both scopes show
    cos = 1; moved to 2 hours ago it leaves the recent scope; as a hide it moves to the hide
    columns. Columns: scope (all, recent) x type (click, save, hide) x (max, mean, soft count)."""
    actions, items, ts, request, cand = make_inputs(batch=1, n_real=3, gap_ms=HOUR_MS)
    actions[0, :3] = int(ActionType.CLICK)
    items[0, :3] = -cand[0]  # every old click is the opposite of the candidate (cos = -1)
    actions[0, 3], items[0, 3], ts[0, 3] = int(ActionType.SAVE), cand[0], REQUEST_MS - 300_000
    enc = encoder(similarity_pool=True)
    assert enc.output_dim == 11 * 97 + SIMILARITY_POOL_DIM

    def pool(acts, stamps):
        return enc(acts, items, stamps, request, cand)[0, -SIMILARITY_POOL_DIM:].view(2, 3, 3)

    fresh = pool(actions, ts)
    torch.testing.assert_close(fresh[0, 0], torch.tensor([-1.0, -1.0, 0.0]))  # clicks, all
    torch.testing.assert_close(fresh[:, 1, :2], torch.ones(2, 2))  # the save, both scopes
    assert fresh[1, 0].abs().sum() == 0  # the clicks are hours old: not recent
    assert fresh[:, 2].abs().sum() == 0  # no hide
    old_ts = ts.clone()
    old_ts[0, 3] = REQUEST_MS - 2 * HOUR_MS
    assert pool(actions, old_ts)[1].abs().sum() == 0
    assert pool(actions, old_ts)[0, 1, 0].item() == pytest.approx(1.0)
    hidden = actions.clone()
    hidden[0, 3] = int(ActionType.HIDE)
    as_hide = pool(hidden, ts)
    assert as_hide[:, 1].abs().sum() == 0
    torch.testing.assert_close(as_hide[:, 2, 0], torch.ones(2))


def test_sharper_pool_counts_only_close_actions() -> None:
    """With a threshold of 0.5, two clicks of the candidate itself count 2 and fill the whole
    share; clicks of loosely related items (cos 0.4) count in the pool's own soft count but
    not in the sharper one. Columns per threshold: scope (all, recent) x type x (count, share)."""
    actions, items, ts, request, cand = make_inputs(batch=1, n_real=4, gap_ms=HOUR_MS)
    actions[0, :4] = int(ActionType.CLICK)
    unit = cand[0] / cand[0].norm()
    other = torch.randn_like(unit)
    other = other - (other @ unit) * unit
    loose = 0.4 * unit + (1 - 0.4 ** 2) ** 0.5 * other / other.norm()  # cos 0.4
    items[0, :2] = cand[0]
    items[0, 2:4] = loose * cand[0].norm()
    enc = encoder(similarity_pool=True, similarity_pool_learned=False,
                  similarity_pool_thresholds=(0.5,))
    assert enc.output_dim == 11 * 97 + SIMILARITY_POOL_DIM + 12
    out = enc(actions, items, ts, request, cand)[0]
    sharp = out[-12:].view(2, 3, 2)
    torch.testing.assert_close(sharp[0, 0], torch.tensor([math.log1p(2.0), 0.5]))
    assert sharp[0, 1:].abs().sum() == 0  # no save, no hide
    own = out[-12 - SIMILARITY_POOL_DIM:-12].view(2, 3, 3)
    assert own[0, 0, 2].item() == pytest.approx(math.log1p(2.8), abs=1e-4)
    with pytest.raises(Exception, match="similarity_pool_thresholds"):
        EncoderConfig(similarity_pool_thresholds=(1.0,)).validate()


def test_model_configs_validate_alike_and_name_bad_choices() -> None:
    from transact.config import resolve_config
    from transact.errors import UserError
    from transact.model.config import LossConfig, ModelConfig, RankerConfig

    for cfg in (EncoderConfig(), RankerConfig(), LossConfig(), ModelConfig()):
        assert cfg.validate() is cfg
    with pytest.raises(UserError, match="time_window_mode"):
        EncoderConfig(time_window_mode="sometimes").validate()
    # a config file takes only the listed choices
    with pytest.raises(UserError, match="one of"):
        resolve_config(ModelConfig, None, {"ranker.encoder.fusion": "late"})
