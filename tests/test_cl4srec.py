"""CL4SRec (models/retrieval/cl4srec.py) and the shared NT-Xent (nn/contrastive.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from behaviorseq import models
from behaviorseq.nn.contrastive import nt_xent, nt_xent_logits
from behaviorseq.nn.losses import next_item_loss

N_ITEMS, L = 30, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def build(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return models.build("cl4srec", N_ITEMS, {"hidden_size": 16, "max_len": L, **overrides})


def left_padded(n_rows: int, seed: int, min_len: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(min_len, L + 1, (n_rows, 1), generator=g)
    item = torch.randint(1, N_ITEMS + 1, (n_rows, L), generator=g)
    return item * (torch.arange(L) >= L - n)


def reference_logits(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """DuoRec's info_nce, loops and all: positives first, then sim[mask] row by row."""
    B = len(z1)
    z = torch.cat([z1, z2])
    sim = z @ z.T / tau
    pos = torch.cat([torch.diag(sim, B), torch.diag(sim, -B)]).reshape(2 * B, 1)
    mask = torch.ones(2 * B, 2 * B, dtype=torch.bool)
    mask.fill_diagonal_(False)
    for i in range(B):
        mask[i, B + i] = mask[B + i, i] = False
    return torch.cat([pos, sim[mask].reshape(2 * B, -1)], 1)


@pytest.mark.parametrize("B", [1, 2, 7])
def test_nt_xent_logits_are_2b_by_2b_minus_1_with_the_positive_at_0(B):
    torch.manual_seed(B)
    z1, z2 = torch.randn(B, 5), torch.randn(B, 5)
    logits = nt_xent_logits(z1, z2, tau=0.5)
    assert logits.shape == (2 * B, 2 * B - 1)
    torch.testing.assert_close(logits, reference_logits(z1, z2, 0.5))
    torch.testing.assert_close(logits[:B, 0], (z1 * z2).sum(1) / 0.5)
    # SimCLR's form: -log exp(s_i,pos) / sum_{j != i} exp(s_ij)
    z = torch.cat([z1, z2])
    sim = (z @ z.T / 0.5).masked_fill(torch.eye(2 * B, dtype=torch.bool), -torch.inf)
    partner = (torch.arange(2 * B) + B) % (2 * B)
    expect = -(sim[torch.arange(2 * B), partner] - sim.logsumexp(1)).mean()
    torch.testing.assert_close(nt_xent(z1, z2, 0.5), expect)


def test_crop_keeps_one_contiguous_run_left_padded():
    item = left_padded(300, seed=1, min_len=2)
    out = build().crop(item, 0.6)
    for row, new in zip(item.tolist(), out.tolist()):
        seq = [x for x in row if x]
        kept = [x for x in new if x]
        assert len(kept) == math.floor(0.6 * len(seq))
        assert new[: L - len(kept)] == [0] * (L - len(kept))  # left-padded
        assert any(seq[s:s + len(kept)] == kept for s in range(len(seq) - len(kept) + 1))


def test_mask_replaces_floor_gamma_n_real_items_by_the_mask_token():
    model = build()
    item = left_padded(300, seed=2)
    out = model.mask(item, 0.3)
    masked = out == model.mask_token
    assert torch.equal(masked.sum(1), ((item > 0).sum(1) * 0.3).floor().long())
    assert not (masked & (item == 0)).any() and torch.equal(out[~masked], item[~masked])
    assert model.mask_token == N_ITEMS + 1


def test_reorder_shuffles_one_run_only():
    item = torch.arange(1, L + 1).repeat(400, 1) * (torch.arange(L) >= 2)  # distinct items, 8 real
    out = build().reorder(item, 0.6)  # runs of floor(4.8) = 4
    assert torch.equal(out.sort(1).values, item.sort(1).values)  # a permutation
    moved = out != item
    for row in moved:
        cols = row.nonzero().flatten()
        if len(cols):
            assert cols.max() - cols.min() < 4 and cols.min() >= 2  # within one run of 4, never padding
    assert moved.any(1).float().mean() > 0.8  # most rows change (4! - 1 of 4! orders do)


def test_augment_gives_two_views_and_leaves_single_items():
    model = build()
    item = left_padded(200, seed=3)
    item[:10] = 0
    item[:10, -1] = 5  # one-item sequences
    v1, v2 = model.augment(item)
    assert torch.equal(v1[:10], item[:10]) and torch.equal(v2[:10], item[:10])
    assert (v1 != v2).any(1)[10:].float().mean() > 0.7


def test_scores_never_include_the_mask_token_and_reload_is_exact(tmp_path):
    model = build()
    item = left_padded(16, seed=4, min_len=2)
    batch = {"item": item, "target": torch.randint(1, N_ITEMS + 1, (16,))}
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss = model.loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = build(seed=7)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        s = model.score(batch)
        assert s.shape == (16, N_ITEMS + 1) and torch.equal(s, fresh.score(batch))


def test_cl_weight_zero_is_the_main_loss_and_both_sample_shapes_train():
    model = build(cl_weight=0.0, dropout=0.0).eval()
    item = left_padded(8, seed=5)
    tgt = torch.randint(1, N_ITEMS + 1, (8,))
    h = model.encode(item)[:, -1]
    expect = F.cross_entropy(h @ model.item_table[1:].T, tgt - 1)
    torch.testing.assert_close(model.loss({"item": item, "target": tgt}), expect)
    shifted = {"item": item, "target": torch.roll(item, -1, 1) * (item > 0)}
    torch.testing.assert_close(model.loss(shifted),
                               next_item_loss(model.encode(item), shifted["target"], model.item_table, "ce"))
    bce = build(loss="bce")
    assert bce.n_negatives == 1
    assert torch.isfinite(bce.loss({"item": item, "target": tgt, "negative": torch.randint(1, 31, (8, 1))}))


def test_learns_a_planted_cyclic_pattern_from_prefix_samples():
    """next item = item mod 30 + 1; single-target samples as prefixes give them; HR@1 > 0.9."""
    model = build(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def batch(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        start, k = torch.randint(0, N_ITEMS, (n, 1), generator=g), torch.randint(1, L + 1, (n, 1), generator=g)
        i = torch.arange(L)[None, :] - (L - k)
        item = ((start + i) % N_ITEMS + 1) * (i >= 0)
        return {"item": item, "target": ((start + k) % N_ITEMS + 1)[:, 0]}

    model.train()
    for step in range(150):
        loss = model.loss(batch(64, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = batch(200, 10_000)
    model.eval()
    with torch.no_grad():
        scores = model.score(test)
    scores[:, 0] = -torch.inf
    assert (scores.argmax(1) == test["target"]).float().mean() > 0.9


def test_length_grouped_views_give_the_same_states_and_loss():
    """encode_by_length (nn/length_groups.py) regroups rows by length and cuts each group to its longest row:
    each state equals the row's own full-width encoding, and CL4SRec's loss does not depend on the grouping
    (no dropout, same draws)."""
    from behaviorseq.nn.length_groups import encode_by_length

    model = build(dropout=0.0).eval()
    a, b = left_padded(37, 1), left_padded(11, 2)[:, -4:]  # two sets, the second narrower
    with torch.no_grad():
        got = encode_by_length(lambda s: model.encode(s)[:, -1], [a, b], cpu_groups=5)
        for seqs, h in zip((a, b), got):
            assert h.shape == (len(seqs), 16)
            own = torch.stack([model.encode(r[None])[0, -1] for r in seqs])
            torch.testing.assert_close(h, own, atol=1e-5, rtol=1e-5)
    model.train()
    batch = {"item": left_padded(64, 3), "target": torch.randint(1, N_ITEMS + 1, (64,))}
    losses = []
    for groups in (1, 3, 64):
        model.cpu_buckets = groups
        torch.manual_seed(7)
        losses.append(model.loss(batch))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses[0], losses[2], atol=1e-5, rtol=1e-5)
