"""Tests of the sequential retrieval baselines (SASRec, GRU4Rec, BERT4Rec) and their shared contract.

Batches are built by hand (dicts of tensors) so that these tests do not depend on the data layer.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from behaviorseq import models
from behaviorseq.config import ConfigError, StrictConfig
from behaviorseq.nn.transformer import MultiHeadAttention, attention_mask

N_ITEMS = 30
L = 10
SMALL = {  # small but default-shaped configs, to keep the tests fast
    "sasrec": {"hidden_size": 16, "max_len": L},
    "gru4rec": {"embedding_size": 16, "hidden_size": 16, "max_len": L},
    "bert4rec": {"hidden_size": 16, "max_len": L},
}
SEQ_MODELS = ["sasrec", "gru4rec", "bert4rec"]  # trained on shifted batches (a target per position)


def small_config(name: str) -> dict:
    """SMALL's entry, or hidden_size 16 / max_len L for the config fields a model has."""
    if name in SMALL:
        return SMALL[name]
    fields = models.get(name).Config.model_fields
    return {k: v for k, v in {"hidden_size": 16, "max_len": L}.items() if k in fields}


def single_target(batch: dict[str, torch.Tensor], padding: str) -> dict[str, torch.Tensor]:
    """A shifted batch as single-target samples: the inputs, and the next item after the last one."""
    last = batch["length"] - 1 if padding == "right" else torch.full_like(batch["length"], batch["item"].shape[1] - 1)
    out = {k: v for k, v in batch.items() if k not in ("target", "negative")}
    out["target"] = batch["target"][torch.arange(len(last)), last]
    return out


def contract_batch(name: str, seqs: list[list[int]], width: int) -> dict[str, torch.Tensor]:
    cls = models.get(name)
    batch = make_batch(seqs, width, cls.padding)
    if getattr(cls, "train_windows", None) in ("random_target", "prefixes"):
        return single_target(batch, cls.padding)
    return batch


def make_batch(seqs: list[list[int]], width: int, padding: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A shifted training/scoring batch: each ``seq`` is a whole sequence; inputs are all but its last
    item, targets all but its first (the last ``width`` of each), one uniform negative per position."""
    B = len(seqs)
    item, target = torch.zeros(B, width, dtype=torch.long), torch.zeros(B, width, dtype=torch.long)
    length = torch.zeros(B, dtype=torch.long)
    for b, s in enumerate(seqs):
        inp, tgt = torch.tensor(s[:-1][-width:]), torch.tensor(s[1:][-width:])
        n = len(inp)
        cols = slice(width - n, width) if padding == "left" else slice(0, n)
        item[b, cols], target[b, cols], length[b] = inp, tgt, n
    g = torch.Generator().manual_seed(seed)
    negative = torch.randint(1, N_ITEMS + 1, (B, width), generator=g) * (target > 0)
    return {"user": torch.arange(B), "item": item, "target": target, "negative": negative, "length": length}


def random_seqs(n: int, seed: int, min_len: int = 2, max_len: int = L + 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.randint(1, N_ITEMS + 1, (k,), generator=g).tolist() for k in lens]


def cyclic_batch(n: int, seed: int, padding: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The planted pattern, vectorised: next item = item mod 30 + 1 from a random start, 1..L inputs.
    Returns the batch and each row's next item after its inputs."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, N_ITEMS, (n, 1), generator=g)
    k = torch.randint(1, L + 1, (n, 1), generator=g)  # number of inputs
    col = torch.arange(L)[None, :]
    i = col - (L - k) if padding == "left" else col  # index of the input in its sequence
    real = (i >= 0) & (i < k)
    item, target = ((start + i) % N_ITEMS + 1) * real, ((start + i + 1) % N_ITEMS + 1) * real
    negative = torch.randint(1, N_ITEMS + 1, (n, L), generator=g) * real
    batch = {"user": torch.arange(n), "item": item, "target": target, "negative": negative, "length": k[:, 0]}
    return batch, ((start + k) % N_ITEMS + 1)[:, 0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def build(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return models.build(name, N_ITEMS, {**small_config(name), **overrides})


def train_step(model, batch, lr: float = 1e-3) -> float:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss = model.loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ---------------------------------------------------------------- contract, over every registered model


@pytest.mark.parametrize("name", models.names("retrieval"))
def test_contract_train_save_reload_same_scores(name, tmp_path):
    cls = models.get(name)
    assert cls.name == name and issubclass(cls.Config, StrictConfig)
    assert cls.padding in ("left", "right") and isinstance(cls.fields, tuple)
    model = build(name)
    assert isinstance(model.n_negatives, int)
    batch = contract_batch(name, random_seqs(8, seed=1), L)
    if hasattr(model, "use_item_counts"):
        model.use_item_counts(torch.arange(N_ITEMS + 1) % 7 + 1)
    if hasattr(model, "set_index"):  # SRA-CL: a semantic index over the batch's own samples
        from behaviorseq.models.retrieval.semantic_index import index_for_batch

        batch["index"] = torch.arange(len(batch["item"]))
        model.set_index(index_for_batch(batch, N_ITEMS, model.cfg.semantic.dim))
    if any(p.requires_grad for p in model.parameters()):
        assert torch.isfinite(torch.tensor(train_step(model, batch)))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = build(name, seed=123)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        s1, s2 = model.score(batch), fresh.score(batch)
    assert s1.shape == (8, N_ITEMS + 1)
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("name", models.names("retrieval"))
def test_config_rejects_unknown_keys_listing_valid_ones(name):
    with pytest.raises(ConfigError, match="valid keys") as e:
        models.build(name, N_ITEMS, {"hiden_size": 8})
    assert "hiden_size" in str(e.value) and "max_len" in str(e.value)
    if "hidden_size" in models.get(name).Config.model_fields:
        assert "hidden_size" in str(e.value)
    with pytest.raises(ConfigError):
        models.build(name, N_ITEMS, {"dropout": 1.5})


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_one_step_reduces_loss_on_a_fixed_batch(name):
    model = build(name, dropout=0.0)
    batch = make_batch(random_seqs(16, seed=2), L, models.get(name).padding)
    torch.manual_seed(0)  # BERT4Rec draws its masks from the global RNG: the same masks both times
    before = train_step(model, batch)
    torch.manual_seed(0)
    with torch.no_grad():
        after = model.loss(batch).item()
    assert after < before


# name -> (Adam steps, peak lr, config overrides) for the planted-pattern test. BERT4Rec needs more
# steps: it must learn to attend to the previous position from BERT's 0.02-std init (SASRec and GRU4Rec
# read the latest item through the residual / the recurrent state), and only its last-position masks
# train the left-context-only prediction that scoring asks for, so a low mask_prob (more forced last
# masks) helps. Tried over seeds: BERT4Rec reached HR@1 >= 0.97 on 8 of 8, the others 1.0 on 3 of 3.
LEARN = {
    "sasrec": (150, 1e-2, {}),
    "gru4rec": (100, 1e-2, {}),
    "bert4rec": (300, 5e-3, {"hidden_size": 32, "num_heads": 1, "dropout": 0.0, "mask_prob": 0.1}),
}


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_learns_a_planted_cyclic_pattern(name):
    """next item = item mod 30 + 1: after 100-300 Adam steps (linear decay, clipping at 1, as BERT's
    optimiser) HR@1 on held-out sequences is > 0.9."""
    steps, lr, overrides = LEARN[name]
    model = build(name, **overrides)
    padding = models.get(name).padding
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    model.train()
    for step in range(steps):
        loss = model.loss(cyclic_batch(64, seed=step, padding=padding)[0])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay.step()
    batch, nxt = cyclic_batch(200, seed=10_000, padding=padding)
    model.eval()
    with torch.no_grad():
        scores = model.score(batch)
    scores[:, 0] = -torch.inf  # the evaluator masks the padding column
    hr1 = (scores.argmax(1) == nxt).float().mean().item()
    assert hr1 > 0.9, f"{name}: HR@1 {hr1:.3f}"


def test_n_negatives_follow_the_loss():
    assert build("sasrec").n_negatives == 1 and build("sasrec", loss="ce").n_negatives == 0
    assert build("gru4rec").n_negatives == 0 and build("gru4rec", loss="bce").n_negatives == 1
    assert build("bert4rec").n_negatives == 0


@pytest.mark.parametrize("name,loss", [("sasrec", "ce"), ("gru4rec", "bce")])
def test_other_loss_trains(name, loss):
    model = build(name, loss=loss, dropout=0.0)
    batch = make_batch(random_seqs(16, seed=3), L, models.get(name).padding)
    before = train_step(model, batch)
    with torch.no_grad():
        assert model.loss(batch).item() < before


# ---------------------------------------------------------------- shared pieces vs torch references


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), Lq=st.integers(1, 6), heads=st.sampled_from([1, 2, 4]), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_attention_matches_torch_multihead_attention(B, Lq, heads, causal, seed):
    """Our MultiHeadAttention + attention_mask against torch.nn.MultiheadAttention, forward and backward."""
    torch.manual_seed(seed)
    d = 8
    ours, ref = MultiHeadAttention(d, heads, 0.0), nn.MultiheadAttention(d, heads, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    valid = torch.rand(B, Lq) < 0.7
    valid[:, -1] = True  # left padding: the latest position is real
    mask = attention_mask(valid, causal)  # [B, 1, L, L]
    q, x = torch.randn(B, Lq, d, requires_grad=True), torch.randn(B, Lq, d)
    out = ours(q, x, x, mask)
    # torch's boolean attn_mask means "may NOT attend", one [L, L] per (batch, head).
    expect, _ = ref(q, x, x, attn_mask=(~mask).expand(B, heads, Lq, Lq).reshape(B * heads, Lq, Lq))
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    g1, = torch.autograd.grad(out.square().sum(), q)
    g2, = torch.autograd.grad(expect.square().sum(), q)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_bert4rec_layer_matches_torch_post_ln_encoder_layer():
    from behaviorseq.models.retrieval.bert4rec import _Layer

    torch.manual_seed(0)
    d, heads = 16, 2
    ours = _Layer(d, heads, 0.0)
    ref = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                     layer_norm_eps=1e-12)
    names = {"attn.": "self_attn.", "attn_norm.": "norm1.", "ffn_norm.": "norm2.", "ffn.net.0.": "linear1.",
             "ffn.net.3.": "linear2."}
    sd = {}
    for k, v in ours.state_dict().items():
        prefix = max((p for p in names if k.startswith(p)), key=len)
        sd[names[prefix] + k[len(prefix):]] = v
    ref.load_state_dict(sd)
    valid = torch.tensor([[False, False, True, True, True], [True] * 5])
    x = torch.randn(2, 5, d)
    out = ours(x, attention_mask(valid, causal=False))
    expect = ref(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(out[valid], expect[valid], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- shared attention mask


def test_attention_mask_hides_padding_keys_and_the_future():
    valid = torch.tensor([[False, True, True], [False, False, False]])
    m = attention_mask(valid, causal=True)[:, 0]  # [B, L, L]
    assert m[0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    assert m[1].tolist() == torch.eye(3, dtype=torch.bool).tolist()  # no row is left without a key
    assert attention_mask(valid, causal=False)[0, 0, 1].tolist() == [False, True, True]


# ---------------------------------------------------------------- SASRec


def test_sasrec_is_causal():
    model = build("sasrec").eval()
    item = torch.randint(1, N_ITEMS + 1, (4, L))
    changed = item.clone()
    t = 6
    changed[:, t] = item[:, t] % N_ITEMS + 1
    with torch.no_grad():
        h, h2 = model.encode(item), model.encode(changed)
    torch.testing.assert_close(h[:, :t], h2[:, :t])
    assert not torch.allclose(h[:, t], h2[:, t])


@pytest.mark.parametrize("layers", [1, 2])
def test_bert4rec_last_only_encode_is_the_last_state_of_encode(layers):
    model = build("bert4rec", num_layers=layers).eval()
    item = torch.randint(1, N_ITEMS + 1, (5, L))
    item[:2, : L // 2] = 0
    item[:, -1] = model.mask_token
    with torch.no_grad():
        torch.testing.assert_close(model.encode(item, last_only=True)[:, 0], model.encode(item)[:, -1],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_sasrec_encode_last_is_the_last_state_of_encode(blocks):
    model = build("sasrec", num_blocks=blocks).eval()
    item = torch.randint(1, N_ITEMS + 1, (5, L))
    item[:2, : L // 2] = 0  # left padding
    item[2, :-1] = 0  # a single item
    with torch.no_grad():
        torch.testing.assert_close(model.encode_last(item), model.encode(item)[:, -1], atol=1e-5, rtol=1e-5)
    model.train()
    model.encode_last(item).sum().backward()  # every parameter the full encode trains gets a gradient
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_extra_left_padding_does_not_change_scores(name):
    """A batch trimmed to its longest sequence scores as the same batch padded to max_len."""
    model = build(name, max_len=20).eval()
    seqs = random_seqs(6, seed=4, max_len=9) + [list(range(1, 10))]  # inputs of up to 8 items
    narrow, wide = make_batch(seqs, 8, "left"), make_batch(seqs, 20, "left")
    with torch.no_grad():
        torch.testing.assert_close(model.score(narrow), model.score(wide), atol=1e-5, rtol=1e-5)


def test_sasrec_rejects_sequences_longer_than_max_len():
    with pytest.raises(ValueError, match="max_len"):
        build("sasrec").score(make_batch(random_seqs(2, seed=5), L + 1, "left"))


# ---------------------------------------------------------------- GRU4Rec


def test_gru4rec_scores_the_state_at_length_minus_one():
    model = build("gru4rec").eval()
    seqs = random_seqs(6, seed=6)
    batch = make_batch(seqs, L, "right")
    garbage = batch["item"].clone()  # trailing positions filled with items: must not matter
    pad = garbage == 0
    garbage[pad] = torch.randint(1, N_ITEMS + 1, (int(pad.sum()),))
    with torch.no_grad():
        scores = model.score(batch)
        assert torch.allclose(scores, model.score({**batch, "item": garbage}), atol=1e-6)
        for b, s in enumerate(seqs):
            alone = model.score({"item": torch.tensor([s[:-1]]), "length": torch.tensor([len(s) - 1])})
            torch.testing.assert_close(scores[b], alone[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- BERT4Rec


def test_bert4rec_masks_at_least_one_real_position_and_never_padding():
    model = build("bert4rec", mask_prob=0.3)
    seq = make_batch(random_seqs(500, seed=7, min_len=2) + [[1]], L, "left")["item"]  # last row: empty
    inp, labels = model.cloze(seq, torch.Generator().manual_seed(0))
    masked = labels > 0
    assert not (masked & (seq == 0)).any()
    assert (masked.sum(1)[:-1] >= 1).all() and masked[-1].sum() == 0
    assert (inp[masked] == model.mask_token).all() and torch.equal(labels[masked], seq[masked])
    assert torch.equal(inp[~masked], seq[~masked])
    rate = masked.sum() / (seq > 0).sum()
    assert 0.28 < rate < 0.40  # ~0.3 plus the forced masks of short sequences
    # With a vanishing probability exactly the latest item is masked.
    inp, labels = build("bert4rec", mask_prob=1e-9).cloze(seq)
    assert torch.equal(labels[:-1, -1], seq[:-1, -1]) and (labels[:, :-1] == 0).all()
    # mask_prob = 1: every real item; a generator makes the draw repeatable.
    full = build("bert4rec", mask_prob=1.0)
    assert torch.equal(full.cloze(seq)[1], seq)
    a = model.cloze(seq, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, model.cloze(seq, torch.Generator().manual_seed(5))[0])


def test_bert4rec_trains_on_the_whole_sequence_up_to_max_len():
    model = build("bert4rec")
    seen = {}
    cloze = model.cloze

    def spy(seq, generator=None):
        seen["seq"] = seq
        return cloze(seq, generator)

    model.cloze = spy
    # A short (left-padded) sequence and one longer than max_len: the latter keeps its last max_len.
    model.loss(make_batch([[3, 4, 5, 6], list(range(1, L + 3))], L, "left"))
    assert seen["seq"][0].tolist() == [0] * (L - 4) + [3, 4, 5, 6]
    assert seen["seq"][1].tolist() == list(range(3, L + 3))
    # A batch trimmed to its longest input (width 5 < max_len) loses nothing: width 6.
    model.loss(make_batch([[3, 4, 5, 6], [1, 2, 3, 4, 5, 6]], 5, "left"))
    assert seen["seq"].tolist() == [[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]]


def test_bert4rec_scores_at_an_appended_mask_token():
    model = build("bert4rec").eval()
    batch = make_batch(random_seqs(5, seed=8), L, "left")
    item = batch["item"]
    with torch.no_grad():
        scores = model.score(batch)
        mask = torch.full((5, 1), model.mask_token)  # a full window (width max_len) drops its oldest item
        expect = model.logits(model.encode(torch.cat([item[:, 1:], mask], 1))[:, -1])
        torch.testing.assert_close(scores, expect)
        model.item_emb.weight[model.mask_token] += 1.0  # the [MASK] embedding feeds the score
        assert not torch.allclose(model.score(batch), scores)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_single_target_batches_train_the_last_position_only(name, loss):
    """train_windows prefixes/random_target give one target per sample: the loss is the shifted loss with
    every position but the latest one's target blanked."""
    model = build(name, loss=loss, dropout=0.0)
    padding = models.get(name).padding
    shifted = make_batch(random_seqs(8, seed=4), L, padding)
    single = single_target(shifted, padding)
    last = shifted["length"] - 1 if padding == "right" else torch.full((8,), L - 1)
    keep = torch.zeros_like(shifted["target"], dtype=torch.bool)
    keep[torch.arange(8), last] = True
    blanked = {**shifted, "target": shifted["target"] * keep, "negative": shifted["negative"] * keep}
    single["negative"] = shifted["negative"][torch.arange(8), last][:, None]
    torch.testing.assert_close(model.loss(single), model.loss(blanked))


def test_bert4rec_trains_on_one_target_a_row_as_on_the_shifted_view():
    """Prefix / random-target windows give each row one target ([B]); the shifted view gives [B, L]. The cloze
    sequence is the same (inputs, then the final target), so is the loss (it crashed on [B] targets)."""
    m = build("bert4rec")
    item = torch.tensor([[0, 3, 5, 7], [2, 4, 6, 8]])
    nxt = torch.tensor([9, 1])
    shifted = {"item": item, "target": torch.cat([item[:, 1:], nxt[:, None]], 1)}
    one = {"item": item, "target": nxt}
    losses = []
    for b in (shifted, one):
        torch.manual_seed(0)  # dropout's draws; the cloze masks come from the generator
        losses.append(m.loss(b, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(losses[0], losses[1])
