"""Tests of the long-sequence CTR models (DIN-long, TWIN, DARE, SDIM) and their shared pieces
(target attention, top-K search, SimHash bucket tables). Batches are built by hand (dicts of tensors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq import models
from behaviorseq.config import ConfigError, StrictConfig
from behaviorseq.models.ranking import RANKING_MODELS, build
from behaviorseq.models.ranking.sdim import BSE
from behaviorseq.nn.simhash import SimHash, bucket_table, collision_probability, lookup, query_interest
from behaviorseq.nn.target_attention import (
    DINActivationUnit,
    masked_softmax,
    softmax_attention,
    topk_attention,
    topk_search,
)

N_ITEMS, N_CATS, L = 40, 6, 24
SMALL = {"max_len": L, "embedding_dim": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def ctr_batch(B: int = 8, width: int = L, seed: int = 0, min_len: int = 1) -> dict[str, torch.Tensor]:
    """Left-padded histories of random lengths in [min_len, width], item categories = item % N_CATS + 1."""
    g = torch.Generator().manual_seed(seed)
    length = torch.randint(min_len, width + 1, (B,), generator=g)
    real = torch.arange(width)[None, :] >= (width - length)[:, None]
    item = torch.randint(1, N_ITEMS + 1, (B, width), generator=g) * real
    target = torch.randint(1, N_ITEMS + 1, (B,), generator=g)
    return {"user": torch.arange(B), "item": item, "category": (item % N_CATS + 1) * real, "length": length,
            "target": target, "target_category": target % N_CATS + 1,
            "label": torch.randint(0, 2, (B,), generator=g).float()}


def make(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = {**SMALL, **overrides}
    if name == "din":
        cfg.pop("top_k", None)
    return build(name, N_ITEMS, N_CATS, cfg)


# ---------------------------------------------------------------- contract over the ranking models


@pytest.mark.parametrize("name", RANKING_MODELS)
def test_contract_train_save_reload_same_scores(name, tmp_path):
    cls = models.get(name)
    assert cls.name == name and issubclass(cls.Config, StrictConfig) and cls.fields == ("category",)
    model = make(name)
    batch = ctr_batch(8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = make(name, seed=123)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        s1, s2 = model.score(batch), fresh.score(batch)
    assert s1.shape == (8,) and torch.equal(s1, s2)


@pytest.mark.parametrize("name", RANKING_MODELS)
def test_config_rejects_unknown_keys_and_missing_fields_are_named(name):
    with pytest.raises(ConfigError, match="valid keys") as e:
        build(name, N_ITEMS, N_CATS, {"embeding_dim": 8})
    assert "embedding_dim" in str(e.value) and "max_len" in str(e.value)
    batch = ctr_batch(4)
    del batch["target_category"]
    with pytest.raises(KeyError, match="target_category"):
        make(name).eval().score(batch)


@pytest.mark.parametrize("name", RANKING_MODELS)
def test_scores_do_not_depend_on_extra_left_padding(name):
    """Positions count from the latest behaviour and padding is masked: a wider batch gives the same logits."""
    model = make(name).eval()
    batch = ctr_batch(6, width=L // 2)
    wide = dict(batch)
    for k in ("item", "category"):
        wide[k] = torch.cat([torch.zeros(6, L // 2, dtype=torch.long), batch[k]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), model.score(wide), rtol=1e-5, atol=1e-6)


def test_output_shapes():
    batch = ctr_batch(5)
    with torch.no_grad():
        out = make("dare", top_k=7).eval()(batch, aux=True)
        assert out["logit"].shape == (5,) and out["aux_logit"].shape == (5,) and out["scores"].shape == (5, L)
        assert out["topk_index"].shape == (5, 7) and out["topk_weight"].shape == (5, 7)
        assert make("twin", top_k=100).eval()(batch)["topk_index"].shape == (5, L)  # K capped at L
        assert make("din").eval()(batch)["weights"].shape == (5, L)
    dare = make("dare", embedding_dim=16, attention_dim=4)
    assert dare.tower.net[0].num_features == 9 * 16  # [v, h, v * h] of 3 fields of d_R
    assert dare.attention.item_embedding.weight.shape[1] == 4


# ---------------------------------------------------------------- target attention and top-K search


@st.composite
def scores_and_mask(draw):
    B, width = draw(st.integers(1, 5)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(draw(st.lists(st.integers(0, width), min_size=B, max_size=B)))
    mask = torch.arange(width)[None, :] >= (width - lengths)[:, None]
    scores = torch.randn(B, width, generator=g, dtype=torch.float64) * 3
    values = torch.randn(B, width, 3, generator=g, dtype=torch.float64)
    return scores, values, mask


@settings(max_examples=60, deadline=None)
@given(scores_and_mask())
def test_topk_with_k_equal_l_is_full_softmax_attention(data):
    scores, values, mask = data
    s1, v1 = scores.clone().requires_grad_(), values.clone().requires_grad_()
    s2, v2 = scores.clone().requires_grad_(), values.clone().requires_grad_()
    h_top, w_top, idx = topk_attention(s1, v1, mask, scores.shape[1])
    h_full, w_full = softmax_attention(s2, v2, mask)
    torch.testing.assert_close(h_top, h_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.zeros_like(w_full).scatter(1, idx, w_top), w_full, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(h_full)
    (h_top * g).sum().backward()
    (h_full * g).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(scores_and_mask(), st.integers(1, 12))
def test_padding_is_never_selected_while_k_real_behaviours_exist(data, k):
    scores, values, mask = data
    scores = scores * 1e6  # real scores far below zero must still beat padding
    idx = topk_search(scores, mask, k)
    chosen_real = mask.gather(1, idx)
    n_real = mask.sum(1)
    for b in range(len(idx)):
        assert int(chosen_real[b].sum()) == min(int(n_real[b]), idx.shape[1])  # every real one first
    h, w, _ = topk_attention(scores, values, mask, k)
    assert (w[~chosen_real] == 0).all()  # padding that had to be chosen gets no weight
    assert torch.isfinite(h).all() and (h[n_real == 0] == 0).all()


def test_topk_reference_loop_equals_vectorised_gather():
    """The official per-row loop (re-mask to the top K, softmax over all L) equals topk + gather."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 20, generator=g, dtype=torch.float64)
    values = torch.randn(6, 20, 5, generator=g, dtype=torch.float64)
    mask = torch.arange(20)[None, :] >= torch.tensor([0, 3, 10, 15, 18, 20])[:, None]
    h, _, _ = topk_attention(scores, values, mask, 4)
    for b in range(6):
        keep = torch.zeros(20, dtype=torch.bool)
        real = torch.nonzero(mask[b]).squeeze(1)
        keep[real[scores[b, real].argsort(descending=True)[:4]]] = True
        w = masked_softmax(scores[b], keep)
        torch.testing.assert_close(h[b], w @ values[b], rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 6), st.integers(0, 1000))
def test_din_activation_unit_matches_plain_concatenation(B, width, dim, seed):
    torch.manual_seed(seed)
    unit = DINActivationUnit(dim, hidden=7).double()
    q = torch.randn(B, dim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, width, dim, dtype=torch.float64, requires_grad=True)
    fast, ref = unit(q, k), unit.reference(q, k)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    g1 = torch.autograd.grad(fast.sum(), [q, k, unit.hidden.weight])
    g2 = torch.autograd.grad(ref.sum(), [q, k, unit.hidden.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sim_hard_search_keeps_the_most_recent_same_category_then_fills_with_recent_others():
    from behaviorseq.models.ranking.sim import hard_search

    category = torch.tensor([[0, 0, 3, 1, 3, 2, 3, 1], [0, 0, 0, 0, 2, 1, 2, 2]])
    mask = category > 0
    idx = hard_search(category, torch.tensor([3, 1]), mask, 4)
    assert idx[0].tolist() == [6, 4, 2, 7]  # the three 3s newest first, then the newest other
    assert idx[1].tolist() == [5, 7, 6, 4]  # one 1, then the newest others; padding never chosen


@pytest.mark.parametrize("name", ["sim", "eta"])
def test_sim_and_eta_with_twins_esu_equal_twin_when_the_search_keeps_everything(name):
    """esu="twin": TWIN's score scaling and auxiliary head. With top_k = L every search keeps all real
    behaviours, so with TWIN's weights both heads must give TWIN's logits; the plain ESU must not."""
    batch = ctr_batch(min_len=3)
    big = {"top_k": L, "init_std": None}  # torch's init: N(0, 0.01) leaves every logit nearly equal
    m, twin = make(name, esu="twin", **big).eval(), make("twin", **big).eval()
    twin.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("hash")})
    torch.testing.assert_close(m.score(batch), twin.score(batch))
    torch.testing.assert_close(m(batch, aux=True)["aux_logit"], twin(batch, aux=True)["aux_logit"])
    plain = make(name, **big).eval()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("aux_tower")})
    assert not torch.allclose(plain.score(batch), twin.score(batch))
    # the loss carries the auxiliary term (weight 1), and none without the head
    main = torch.nn.functional.binary_cross_entropy_with_logits(m.score(batch), batch["label"])
    aux = torch.nn.functional.binary_cross_entropy_with_logits(m(batch, aux=True)["aux_logit"], batch["label"])
    torch.testing.assert_close(m.loss(batch), main + aux + m.cfg.l2 * l2_of(m))
    assert make(name, esu="twin", aux_loss_weight=0.0).aux_tower is None and plain.aux_tower is None


def l2_of(model) -> torch.Tensor:
    from behaviorseq.nn.ctr_tower import l2_penalty

    return l2_penalty(model)


def test_eta_hamming_search_equals_brute_force_bit_counting():
    from behaviorseq.models.ranking.eta import hamming_search

    g = torch.Generator().manual_seed(0)
    h = SimHash(8, 32, 1, seed=2)
    keys, query = torch.randn(3, 30, 8, generator=g), torch.randn(3, 8, generator=g)
    mask = torch.arange(30)[None, :] >= torch.tensor([0, 5, 26])[:, None]
    idx = hamming_search(h, query, keys, mask, 6)
    bits_k, bits_q = h.bits(keys).numpy(), h.bits(query).numpy()
    for b in range(3):
        ham = (bits_k[b] != bits_q[b][None, :]).sum(1)
        real = np.flatnonzero(mask[b].numpy())
        order = sorted(real, key=lambda j: (ham[j], -j))  # nearest first, ties to the more recent
        assert idx[b, :min(6, len(real))].tolist() == order[:6]


# ---------------------------------------------------------------- DARE


def _tie_dare_to_twin(twin, dare) -> None:
    """DARE's attention and representation tables both start as TWIN's table; the towers are copied."""
    tw = twin.state_dict()
    state = dare.state_dict()
    for k in state:
        src = k.split(".", 1)[1] if k.startswith(("attention.", "representation.")) else k
        state[k] = tw[src].clone()
    dare.load_state_dict(state)


def test_dare_with_tied_tables_and_summed_gradients_reproduces_twin():
    """Brief 1.7 / the official observe_attn_repr_grad: two identical tables, each given the sum of both
    gradients after every step, train exactly like TWIN's one table (float64: equal to rounding)."""
    cfg = {"top_k": 5, "embedding_dim": 4}
    twin, dare = make("twin", **cfg).double(), make("dare", seed=1, **cfg).double()
    _tie_dare_to_twin(twin, dare)
    opt_t = torch.optim.Adam(twin.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(dare.parameters(), lr=1e-2)
    for step in range(8):
        batch = ctr_batch(16, seed=step)
        lt, ld = twin.loss(batch), dare.loss(batch)
        assert abs(lt.item() - ld.item()) <= 1e-12 * max(1.0, abs(lt.item())), step
        opt_t.zero_grad()
        opt_d.zero_grad()
        lt.backward()
        ld.backward()
        for field in ("item_embedding", "category_embedding", "position_embedding"):
            a = getattr(dare.attention, field).weight
            r = getattr(dare.representation, field).weight
            total = a.grad + r.grad
            a.grad, r.grad = total.clone(), total.clone()
        opt_t.step()
        opt_d.step()
    torch.testing.assert_close(dare.attention.item_embedding.weight, twin.item_embedding.weight,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dare.representation.item_embedding.weight, twin.item_embedding.weight,
                               rtol=1e-10, atol=1e-12)


def _grad_norms(tables) -> list[float]:
    return [0.0 if p.grad is None else float(p.grad.abs().sum()) for p in tables.parameters()]


def test_dare_scores_only_backprop_leaves_representation_gradient_zero():
    dare = make("dare", top_k=5)
    out = dare(ctr_batch(8), aux=True)
    out["scores"].sum().backward()
    assert all(g == 0 for g in _grad_norms(dare.representation))
    assert all(g > 0 for g in _grad_norms(dare.attention))


def test_dare_mlp_backprop_with_detached_attention_leaves_attention_gradient_zero():
    dare = make("dare", top_k=5)
    batch = ctr_batch(8)
    out = dare(batch, aux=True, detach_scores=True)
    (out["logit"].sum() + out["aux_logit"].sum()).backward()
    assert all(g == 0 for g in _grad_norms(dare.attention))
    assert all(g > 0 for g in _grad_norms(dare.representation))
    twin = make("twin", top_k=5)  # with one table the two paths share the gradient
    twin(batch)["scores"].sum().backward()
    assert twin.item_embedding.weight.grad.abs().sum() > 0


def test_dare_official_init_and_l2_terms():
    dare = make("dare", embedding_dim=16)
    with torch.no_grad():
        gamma, slope = dare.tower.net[0].weight, dare.tower.net[2].weight
        assert abs(float(gamma.std()) - 0.01) < 0.003 and float(gamma.abs().max()) < 0.06  # BN gamma ~ N(0, .01)
        assert float(slope.abs().max()) < 0.06  # PReLU slope ~ N(0, .01), not 0.25
        assert float(make("dare", init_std=None).tower.net[0].weight.min()) == 1.0  # torch default BN gamma
    from behaviorseq.nn.ctr_tower import l2_penalty

    expect = sum(float(p.detach().pow(2).sum()) for n, p in dare.named_parameters()
                 if "bias" not in n and "embedding" not in n)
    assert math.isclose(float(l2_penalty(dare).detach()), expect, rel_tol=1e-5)


def test_dare_eval_path_embeds_only_the_chosen_behaviours_with_the_same_result():
    dare = make("dare", top_k=6).eval()
    batch = ctr_batch(8)
    with torch.no_grad():
        torch.testing.assert_close(dare(batch)["logit"], dare(batch, aux=True)["logit"], rtol=0, atol=0)


# ---------------------------------------------------------------- SDIM and its BSE split


@pytest.mark.parametrize("name,extra,n_real", [("twin", {}, 15), ("dare", {}, 15), ("dare", {"attention_dim": 2}, L),
                                               ("twin", {"use_position": False}, 15), ("dare", {"top_k": 3}, 9),
                                               ("twin", {"top_k": 12}, 5), ("dare", {"top_k": 12}, 5)])
def test_score_candidates_serving_path_equals_repeated_rows(name, extra, n_real):
    """TWIN / DARE serving (real behaviours embedded once, all candidates in one product) equals ``score``
    on the history repeated per candidate: with left padding, without, and with fewer than K behaviours."""
    model = make(name, seed=3, init_std=None, **extra).eval()  # torch's N(0, 1) embeddings: scores far apart
    b = ctr_batch(B=1, seed=5, min_len=n_real)
    keep = torch.arange(L) >= L - n_real
    b["item"], b["category"] = b["item"] * keep, b["category"] * keep
    g = torch.Generator().manual_seed(9)
    C = 17
    t = torch.randint(1, N_ITEMS + 1, (C,), generator=g)
    cand = {"target": t, "target_category": t % N_CATS + 1}
    hist = {"item": b["item"][0], "category": b["category"][0]}
    rows = {"item": hist["item"].expand(C, L), "category": hist["category"].expand(C, L), **cand}
    with torch.no_grad():
        ref = model.score(rows)
    got = model.score_candidates(hist, cand)
    assert got.shape == (C,) and ref.std() > 1e-2  # the candidates' logits differ, so the check has teeth
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_score_candidates_rejects_padding_after_a_real_behaviour():
    model = make("dare").eval()
    item = torch.tensor([0, 3, 0, 5])
    with pytest.raises(ValueError, match="not left-padded"):
        model.score_candidates({"item": item, "category": item % N_CATS + 1},
                               {"target": torch.tensor([1, 2]), "target_category": torch.tensor([2, 3])})


@pytest.mark.parametrize("name", ["twin", "dare", "sdim"])
def test_serving_calls_run_in_eval_mode_and_leave_the_model_as_it_was(name):
    """A model straight from training is in train mode; serving must neither use dropout / batch statistics
    nor move BatchNorm's running stats, and must hand the model back in train mode."""
    model = make(name, seed=3, init_std=None)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    b = ctr_batch(B=1, seed=5)
    t = torch.randint(1, N_ITEMS + 1, (6,), generator=torch.Generator().manual_seed(9))
    cand = {"target": t, "target_category": t % N_CATS + 1}
    hist = {"item": b["item"][0], "category": b["category"][0]}
    if name == "sdim":
        bse = BSE(model)
        serve = lambda: bse.score({k: v[None] for k, v in cand.items()},  # noqa: E731
                                  bse.encode({k: v[None] for k, v in hist.items()}))[0]
    else:
        serve = lambda: model.score_candidates(hist, cand)  # noqa: E731
    got = serve()
    assert model.training and not got.requires_grad
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
    model.eval()
    torch.testing.assert_close(got, serve(), rtol=0, atol=0)
    if name != "sdim":  # a history longer than the position table: a message, not an IndexError
        long = torch.randint(1, N_ITEMS + 1, (model.cfg.max_len + 3,))
        with pytest.raises(ValueError, match="max_len"):
            model.score_candidates({"item": long, "category": long % N_CATS + 1}, cand)


def test_fast_embedding_equals_nn_embedding_values_and_gradients():
    from behaviorseq.nn.ctr_tower import FastEmbedding

    torch.manual_seed(0)
    fast, ref = FastEmbedding(11, 3), torch.nn.Embedding(11, 3)
    ref.load_state_dict(fast.state_dict())  # same parameter name: checkpoints load either way
    ids = torch.randint(0, 11, (4, 7))
    ids[0, :3] = 0  # repeated ids accumulate
    g = torch.randn(4, 7, 3)
    out_f, out_r = fast(ids), ref(ids)
    torch.testing.assert_close(out_f, out_r, rtol=0, atol=0)
    out_f.backward(g)
    out_r.backward(g)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-6, atol=1e-6)


def test_sdim_bse_serving_equals_training_path():
    """BSE (table built once per user, candidates looked up) against the training forward (the target's
    buckets summed directly) on the history repeated per candidate: equal to float rounding."""
    model = make("sdim", embedding_dim=8, short_len=5, init_std=None).eval()  # N(0, 1): logits far apart
    U, C = 4, 7
    hist = ctr_batch(U, seed=5)
    g = torch.Generator().manual_seed(9)
    cand = torch.randint(1, N_ITEMS + 1, (U, C), generator=g)
    bse = BSE(model)
    table = bse.encode({"item": hist["item"], "category": hist["category"]})
    assert table.table.shape == (U, 16, 8, 16)
    served = bse.score({"target": cand, "target_category": cand % N_CATS + 1}, table)  # [U, C]
    rows = torch.arange(U).repeat_interleave(C)
    flat = {"item": hist["item"][rows], "category": hist["category"][rows], "target": cand.reshape(-1),
            "target_category": cand.reshape(-1) % N_CATS + 1}
    with torch.no_grad():
        trained = model(flat)["logit"].view(U, C)
    assert served.std() > 1e-2  # the candidates' logits differ, so the check has teeth
    torch.testing.assert_close(served, trained, rtol=1e-5, atol=1e-6)


def test_sdim_training_gradients_equal_those_through_the_bucket_table():
    """The training forward's gradients equal those of serving's encode + lookup on the same rows."""
    model = make("sdim", seed=4, init_std=None)
    batch = ctr_batch(12, seed=2)
    grads = {}
    for path in ("query", "table"):
        model.zero_grad()
        if path == "query":
            logit = model(batch)["logit"]
        else:
            q = model.embed(batch["target"], batch["target_category"]).unsqueeze(1)
            logit = model.logits(q, model.encode(batch["item"], batch["category"]))[:, 0]
        torch.nn.functional.binary_cross_entropy_with_logits(logit, batch["label"]).backward()
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["query"].keys() == grads["table"].keys()
    assert grads["query"]["item_embedding.weight"].abs().sum() > 0
    for n in grads["query"]:
        torch.testing.assert_close(grads["query"][n], grads["table"][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("B,width,S,nb", [(1, 1, 1, 2), (3, 17, 4, 8), (5, 64, 16, 8)])
def test_bucket_table_scatter_equals_matmul_reference_forward_and_backward(B, width, S, nb):
    g = torch.Generator().manual_seed(B * width)
    v = torch.randn(B, width, 6, dtype=torch.float64, generator=g, requires_grad=True)
    codes = torch.randint(0, nb, (B, width, S), generator=g)
    mask = torch.rand(B, width, generator=g) > 0.3
    w = torch.randn(B, S, nb, 6, dtype=torch.float64, generator=g)
    out = {m: bucket_table(v, codes, mask, nb, method=m) for m in ("scatter", "matmul")}
    torch.testing.assert_close(out["scatter"], out["matmul"], rtol=1e-12, atol=1e-12)
    grads = [torch.autograd.grad((out[m] * w).sum(), v)[0] for m in ("scatter", "matmul")]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    assert (grads[0][~mask] == 0).all()  # padding gets no gradient
    with pytest.raises(ValueError, match="method"):
        bucket_table(v, codes, mask, nb, method="dense")


def test_sdim_projection_is_a_fixed_buffer():
    model = make("sdim")
    assert "hash.projection" in model.state_dict()
    assert all("projection" not in n for n, _ in model.named_parameters())
    before = model.hash.projection.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(ctr_batch(8)).backward()
    opt.step()
    assert torch.equal(before, model.hash.projection)
    assert torch.equal(make("sdim", seed=5).hash.projection, before)  # set by hash_seed, not the torch seed


@pytest.mark.parametrize("cos", [0.95, 0.7, 0.3, 0.0, -0.5])
def test_simhash_collision_probability_is_one_minus_theta_over_pi_to_the_tau(cos):
    """Brief 2.7: P(a tau=3 signature collides) = (1 - theta/pi)^3; 30,000 independent signatures."""
    n_sig, tau, dim = 30_000, 3, 16
    h = SimHash(dim, n_sig * tau, tau, seed=int((cos + 1) * 100))
    g = torch.Generator().manual_seed(1)
    a = torch.randn(dim, generator=g)
    b_perp = torch.randn(dim, generator=g)
    a, b_perp = a / a.norm(), b_perp - (b_perp @ a) / (a @ a) * a
    b = cos * a + math.sqrt(1 - cos**2) * b_perp / b_perp.norm()
    rate = float((h.codes(a) == h.codes(b)).double().mean())
    p = float(collision_probability(cos, tau))
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n_sig) + 1e-4, (rate, p)


def test_bucket_table_lookup_equals_direct_collision_sum():
    """Eq. 12 computed directly (sum of the colliding behaviours, per signature) vs table + lookup."""
    g = torch.Generator().manual_seed(0)
    B, width, D, C = 3, 50, 8, 5
    seq = torch.randn(B, width, D, generator=g, dtype=torch.float64)
    mask = torch.arange(width)[None, :] >= torch.tensor([0, 20, 45])[:, None]
    q = torch.randn(B, C, D, generator=g, dtype=torch.float64)
    h = SimHash(D, 48, 3)
    got = lookup(bucket_table(seq, h.codes(seq), mask, 8), h.codes(q))  # [B, C, D]
    direct = query_interest(seq, h.codes(seq), mask, h.codes(q))  # the training path's form
    cs, cq = h.codes(seq), h.codes(q)  # [B, L, S], [B, C, S]
    collide = (cs[:, None, :, :] == cq[:, :, None, :]) & mask[:, None, :, None]  # [B, C, L, S]
    sums = torch.einsum("bcls,bld->bcsd", collide.double(), seq)
    ref = torch.nn.functional.normalize(sums, dim=-1, eps=1e-12).mean(2)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(direct, ref, rtol=1e-12, atol=1e-12)


def test_simhash_codes_are_the_signature_bits_read_as_binary_numbers():
    h = SimHash(6, 12, 3, seed=1)
    x = torch.randn(5, 7, 6, generator=torch.Generator().manual_seed(3))
    bits = h.bits(x).view(5, 7, 4, 3).long()
    codes = h.codes(x)
    assert codes.dtype == torch.int64 and codes.shape == (5, 7, 4)
    assert torch.equal(codes, bits[..., 0] + 2 * bits[..., 1] + 4 * bits[..., 2])
    assert "code_weights" not in h.state_dict()  # derived, so older checkpoints still load
    wide = SimHash(6, 1026, 3, seed=1)  # beyond BLOCK_LIMIT: the per-signature form, no [m, m / tau] matrix
    assert wide.code_weights is None
    wide_bits = wide.bits(x).view(5, 7, 342, 3).long()
    assert torch.equal(wide.codes(x), wide_bits[..., 0] + 2 * wide_bits[..., 1] + 4 * wide_bits[..., 2])


def test_sdim_long_interest_is_permutation_invariant_and_ignores_padding():
    model = make("sdim", short_len=0).eval()
    batch = ctr_batch(6, min_len=L)
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(2))
    shuffled = {**batch, "item": batch["item"][:, perm], "category": batch["category"][:, perm]}
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), model.score(shuffled), rtol=1e-5, atol=1e-6)
    h = SimHash(4, 48, 3)
    zero_codes = h.codes(torch.zeros(4))
    assert (zero_codes == 0).all()  # why padding must be masked: a zero vector hashes to bucket 0 everywhere


# ---------------------------------------------------------------- learning on planted data


def test_dare_beats_a_no_history_baseline_on_planted_long_sequences():
    """Planted data (L = 60, 10 items per category): DARE over the history learns the latent
    interaction with the deep same-category behaviours; the same model with the history removed cannot
    (latent vectors are centred per category, so the target alone carries no signal). One thread, < 60 s."""
    from behaviorseq.data.ctr import CTRBatcher
    from behaviorseq.data.synthetic.long_ctr import LongCTRConfig, generate_long_ctr
    from behaviorseq.metrics import auc

    data, truth = generate_long_ctr(LongCTRConfig(n_users=1000, n_items=60, n_categories=6, latent_dim=2,
                                                  n_interests=2, n_relevant=4, n_decoys=1, min_len=60, max_len=60,
                                                  samples_per_user=20, seed=3))
    batcher = CTRBatcher(data, 60)
    train, test = data.indices("train"), data.indices("test")
    bayes = auc(data.label[test], truth.click_prob[test])

    def fit_and_auc(with_history: bool, epochs: int) -> float:
        torch.manual_seed(0)
        model = build("dare", data.n_items, data.vocab_size("category") - 1, {"max_len": 60, "embedding_dim": 4})
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # DARE scripts' lr
        rng = np.random.default_rng(0)

        def get(rows):
            b = batcher.batch(rows)
            if not with_history:
                b["item"], b["category"] = torch.zeros_like(b["item"][:, :1]), torch.zeros_like(b["category"][:, :1])
            return b

        for _ in range(epochs):
            order = rng.permutation(train)
            for i in range(0, len(order), 256):
                loss = model.loss(get(order[i:i + 256]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            return auc(data.label[test], model.score(get(test)))

    with_hist, without = fit_and_auc(True, 4), fit_and_auc(False, 2)
    assert bayes > 0.9 and without < 0.56, (bayes, without)
    assert with_hist > 0.75, (with_hist, without, bayes)  # seen: 0.875 / 0.886 / 0.913 for seeds 0 / 1 / 2


@pytest.mark.parametrize("tau", [3, 9, 12])
def test_simhash_codes_under_autocast_are_the_float32_ones(tau):
    h = SimHash(16, 4 * tau, tau, seed=1)
    x = torch.randn(64, 40, 16)
    want_bits, want = h.bits(x), h.codes(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # AMP's matmuls: bits flipped and buckets merged (tau >= 9)
        assert torch.equal(h.bits(x), want_bits) and torch.equal(h.codes(x), want)
    assert int(want.max()) < h.n_buckets
