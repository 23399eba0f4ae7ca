"""ComiRec-SA / ComiRec-DR invariants (the brief's list) and the sampled softmax they train with."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from behaviorseq import models
from behaviorseq.nn.multi_interest import hard_readout, max_interest_scores, squash
from behaviorseq.nn.sampled_softmax import (
    log_expected_count,
    proposal_probs,
    sample_unique,
    sampled_softmax_loss,
)

N_ITEMS, L, D, K = 40, 8, 16, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def build(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    m = models.build(name, N_ITEMS, {"hidden_size": D, "num_interests": K, "max_len": L, **kw})
    m.use_item_counts(torch.arange(N_ITEMS + 1).flip(0).double())
    return m


def right_padded(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    item = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        item[b, :n] = torch.randint(1, N_ITEMS + 1, (n,), generator=g)
    return item


# ------------------------------------------------------------------------------------------- DR


def test_dr_couplings_sum_to_one_over_interests_at_real_positions_and_zero_at_padding():
    m = build("comirec_dr").eval()
    item = right_padded([1, 3, 8, 5], L)
    v, c = m.routing(item)
    valid = (item > 0).unsqueeze(1).expand_as(c)
    torch.testing.assert_close(c.sum(1)[item > 0], torch.ones(int((item > 0).sum())))
    assert (c[~valid] == 0).all()
    assert v.shape == (4, K, D)


def test_capsule_norms_are_below_one():
    m = build("comirec_dr").eval()
    v, _ = m.routing(right_padded([2, 8, 4], L, seed=1))
    assert (v.norm(dim=-1) < 1).all()
    s = torch.randn(100, D) * torch.logspace(-3, 3, 100)[:, None]
    assert (squash(s).norm(dim=-1) < 1).all()


def reference_routing(W: torch.Tensor, e: torch.Tensor, valid: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """The official loop, written position by position: W [L, K, d, d], e [B, L, d], valid [B, L]."""
    B, n, d = e.shape
    k = W.shape[1]
    e_hat = torch.stack([torch.stack([e[:, i] @ W[i, j].T for i in range(n)], 1)  # [B, L, d]: W_ij e_i
                         for j in range(k)], 1)  # [B, K, L, d]
    b = torch.zeros(B, k, n)
    for it in range(iters):
        c = torch.softmax(b, 1) * valid[:, None, :]
        src = e_hat.detach() if it < iters - 1 else e_hat
        s = (c[..., None] * src).sum(2)
        v = s * (s.pow(2).sum(-1, keepdim=True) / (1 + s.pow(2).sum(-1, keepdim=True))) / torch.sqrt(
            s.pow(2).sum(-1, keepdim=True) + 1e-9)
        if it < iters - 1:
            b = b + (e_hat.detach() * v[:, :, None, :]).sum(-1)
    return v


def test_dr_matches_a_loop_reference_in_values_and_in_gradients_to_w():
    """The einsum routing equals the position-by-position loop, and W's gradient (which flows through
    the last iteration only, stop-gradient before) is the same."""
    m = build("comirec_dr").train()
    item = right_padded([3, 8, 6], L, seed=2)
    v, _ = m.routing(item)
    e = m.item_emb(item) * (item > 0).unsqueeze(-1)
    W_ref = m.W.detach().clone().requires_grad_(True)
    v_ref = reference_routing(W_ref, e.detach(), (item > 0).float())
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-4)
    w = torch.randn_like(v)
    (v * w).sum().backward()
    (v_ref * w).sum().backward()
    torch.testing.assert_close(m.W.grad, W_ref.grad, atol=1e-5, rtol=1e-4)
    # Without the stop-gradient the gradient would differ: the test can tell.
    W2 = m.W.detach().clone().requires_grad_(True)
    e_hat = torch.einsum("lkhd,bld->bklh", W2[:L], e.detach())
    b = torch.zeros(e_hat.shape[:3])
    for it in range(3):
        c = torch.softmax(b, 1) * (item > 0)[:, None, :]
        vv = squash(torch.einsum("bkl,bklh->bkh", c, e_hat))
        if it < 2:
            b = b + torch.einsum("bklh,bkh->bkl", e_hat, vv)
    (vv * w).sum().backward()
    assert not torch.allclose(W2.grad, W_ref.grad, atol=1e-4)


# ------------------------------------------------------------------------------------------- SA


def test_sa_attention_is_a_softmax_over_real_positions_and_interests_use_raw_embeddings():
    m = build("comirec_sa").eval()
    item = right_padded([1, 5, 8], L, seed=3)
    a = m.attention(item)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, K))
    assert (a.transpose(1, 2)[item == 0] == 0).all()
    h = m.item_emb(item) * (item > 0).unsqueeze(-1)
    torch.testing.assert_close(m.interests({"item": item}), a @ h)  # positions enter the attention only
    m2 = build("comirec_sa", add_pos=False).eval()
    m2.load_state_dict(m.state_dict())
    assert not torch.allclose(m2.attention(item), a)  # ... but they do enter it


@pytest.mark.parametrize("name", ["comirec_sa", "comirec_dr"])
def test_padding_slots_never_change_outputs(name):
    """A batch trimmed to its longest sequence scores as the same batch padded to max_len."""
    m = build(name).eval()
    narrow = right_padded([2, 5, 3], 5, seed=4)
    wide = torch.cat([narrow, torch.zeros(3, L - 5, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(m.score({"item": narrow}), m.score({"item": wide}))


@pytest.mark.parametrize("name", ["comirec_sa", "comirec_dr"])
def test_serving_score_is_the_max_over_interests(name):
    m = build(name).eval()
    item = right_padded([4, 8], L, seed=5)
    with torch.no_grad():
        v = m.interests({"item": item})
        s = m.score({"item": item})
    torch.testing.assert_close(s, (v @ m.item_emb.weight.T).amax(1))
    assert s.shape == (2, N_ITEMS + 1)


def test_hard_readout_picks_the_interest_closest_to_the_target():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    t = torch.tensor([[0.2, 0.9], [0.9, 0.2]])
    torch.testing.assert_close(hard_readout(v, t), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert max_interest_scores(v, torch.eye(2)).tolist() == [[1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize("name,lr", [("comirec_sa", 1e-2), ("comirec_dr", 5e-3)])
def test_training_on_single_targets_reduces_the_loss(name, lr):
    m = build(name, loss="full")
    item = right_padded([8] * 32, L, seed=6)
    batch = {"item": item, "target": (item[:, -1] % N_ITEMS) + 1}
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    first = None
    for _ in range(30):
        loss = m.loss(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    with pytest.raises(ValueError, match="single-target"):
        m.loss({"item": item, "target": item})


# -------------------------------------------------------------------------------- sampled softmax


def test_log_uniform_proposal_ranks_items_by_training_frequency():
    counts = torch.tensor([99.0, 5, 50, 0, 20])  # id 0 is padding: its count is ignored
    q = proposal_probs(counts, "log_uniform")
    assert q[0] == 0 and math.isclose(q.sum().item(), 1.0, rel_tol=1e-9)
    # ranks: id2 (50) -> 0, id4 (20) -> 1, id1 (5) -> 2, id3 (0) -> 3; Q(r) = log((r+2)/(r+1))/log(n+1)
    expect = [math.log((r + 2) / (r + 1)) / math.log(5) for r in (2, 0, 3, 1)]
    torch.testing.assert_close(q[1:], torch.tensor(expect, dtype=torch.float64))
    torch.testing.assert_close(proposal_probs(counts, "unigram")[1:], torch.tensor([5, 50, 0, 20.0]).double() / 75)
    with pytest.raises(ValueError, match="proposal"):
        proposal_probs(counts, "zipf")


def test_unigram_negatives_are_capped_by_the_items_it_can_draw():
    # 40 items, only 10 seen in training: a batch of 8 asks for 80 negatives; the cap is half of the 10
    # drawable items (a cap over the catalogue, 20, could not be drawn distinct and raised).
    from behaviorseq.nn.multi_interest import MultiInterestLoss

    loss = MultiInterestLoss(40, proposal="unigram")
    loss.use_item_counts(torch.cat([torch.zeros(31), torch.ones(10)]).double())
    table = torch.randn(41, 4)
    out = loss(torch.randn(8, 2, 4), torch.randint(31, 41, (8,)), table)
    assert torch.isfinite(out)
    assert loss._max_sampled == 5


def test_unique_sampler_draws_distinct_ids_and_counts_its_tries():
    q = proposal_probs(torch.arange(101).double(), "log_uniform")
    g = torch.Generator().manual_seed(0)
    ids, tries = sample_unique(q, 30, g)
    assert len(set(ids.tolist())) == 30 and 0 not in ids.tolist() and tries >= 30
    with pytest.raises(ValueError, match="distinct"):
        sample_unique(q, 101, g)
    # Inclusion frequency over many draws matches 1 - (1 - Q)^tries at the typical number of tries.
    hits, all_tries = torch.zeros(101), []
    for s in range(400):
        ids, t = sample_unique(q, 10, torch.Generator().manual_seed(s))
        hits[ids] += 1
        all_tries.append(t)
    expected = torch.exp(log_expected_count(q, int(torch.tensor(all_tries).float().median())))
    top = torch.argsort(q, descending=True)[:5]  # frequent items: enough hits to compare
    torch.testing.assert_close(hits[top] / 400, expected[top].float(), atol=0.08, rtol=0.15)


def test_sampled_softmax_equals_a_manual_computation_and_removes_accidental_hits():
    torch.manual_seed(0)
    table = torch.randn(N_ITEMS + 1, D)
    user = torch.randn(3, D)
    q = proposal_probs(torch.arange(N_ITEMS + 1).double(), "log_uniform")
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    neg, tries = sample_unique(q, 12, g2)
    target = torch.stack([neg[0], neg[5], torch.tensor([i for i in range(1, N_ITEMS + 1) if i not in neg.tolist()][0])])
    loss = sampled_softmax_loss(user, target, table, q, 12, g1)
    lq = log_expected_count(q, tries).float()
    manual = []
    for b in range(3):
        logits = [user[b] @ table[target[b]] - lq[target[b]]]
        logits += [user[b] @ table[n] - lq[n] for n in neg if n != target[b]]  # accidental hit dropped
        manual.append(-F.log_softmax(torch.stack(logits), 0)[0])
    torch.testing.assert_close(loss, torch.stack(manual).mean())


def test_expected_count_is_tfs_also_when_no_draw_repeated_and_sa_masks_in_half_precision():
    from behaviorseq.nn.sampled_softmax import log_expected_count

    q = torch.tensor([0.0, 0.1, 0.3, 0.6])
    assert torch.allclose(log_expected_count(q[1:], 3, 3), torch.log(q[1:] * 3))  # TF: q * num_sampled
    assert torch.allclose(log_expected_count(q[1:], 7, 3), torch.log(1 - (1 - q[1:]) ** 7))
    logits = torch.zeros(1, 2, 3, dtype=torch.float16)
    valid = torch.tensor([[True, True, False]])
    from behaviorseq.models.retrieval.comirec_sa import PAD_LOGIT

    filled = logits.masked_fill(~valid.unsqueeze(1), max(PAD_LOGIT, torch.finfo(logits.dtype).min))
    assert torch.softmax(filled.float(), -1)[0, 0].tolist() == [0.5, 0.5, 0.0]
