"""Neural TPP models and the TPP task: exact log-likelihood through the task, causality, shapes,
thinning against the analytic answer, the Trainer loop, and a small learning test."""

import math
import time

import numpy as np
import pytest
import torch

from behaviorseq import models
from behaviorseq.config import ConfigError, TrainConfig
from behaviorseq.data.eventseq import EventSequences
from behaviorseq.data.synthetic.hawkes import HawkesParams, hawkes_loglik, simulate_hawkes
from behaviorseq.models.tpp.hawkes_exp import HawkesExp
from behaviorseq.nn.time_encoding import SinusoidalTimeEncoding, scaled_softplus
from behaviorseq.nn.tpp import loglik, thinning_predict
from behaviorseq.tasks.tpp import TPPBatcher, TPPTask, TPPTaskConfig

TPP_MODELS = ["nhp", "thp", "attnhp", "prompttpp", "hawkes_exp"]
VARIANTS = {"thp-easytpp": ("thp", {"blocks": "easytpp"})}  # a registered model with a non-default layout
MODELS = TPP_MODELS + list(VARIANTS)
PARAMS = HawkesParams([0.2, 0.1], [[0.5, 0.2], [0.3, 0.4]], [[1.0, 2.0], [1.5, 1.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def make_task(n_seqs=60, max_events=30, seed=0, **cfg) -> TPPTask:
    s = simulate_hawkes(PARAMS, n_seqs, max_events=max_events, seed=seed)
    tr, va, te = s.seqs.split((0.6, 0.2, 0.2), seed=0)
    return TPPTask({"train": tr, "valid": va, "test": te}, TPPTaskConfig(**cfg), TrainConfig(batch_size=16))


def truth() -> HawkesExp:
    return HawkesExp.from_params(PARAMS.mu, PARAMS.adjacency, PARAMS.decay)


def build(name: str, num_types: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    name, extra = VARIANTS.get(name, (name, {}))
    m = models.build(name, num_types, {"dropout": 0.0, **extra} if name == "thp" else {})
    return m.eval()


def test_registry_round_trip_and_strict_configs():
    for name in TPP_MODELS:
        assert models.get(name).name == name
    with pytest.raises(ConfigError, match="valid keys are"):
        models.build("nhp", 2, {"hiden_size": 8})


@pytest.mark.parametrize("name", MODELS)
def test_contract_train_save_reload_same_intensities(name, tmp_path):
    from behaviorseq.config import StrictConfig

    cls = models.get(VARIANTS.get(name, (name,))[0])
    assert issubclass(cls.Config, StrictConfig) and cls.padding == "right"
    assert set(cls.fields) == {"time", "dtime", "type", "mask"}
    task = make_task(n_seqs=10)
    batch = task.batchers["train"].batch(np.arange(4))
    m = build(name).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.loss(batch).backward()
    opt.step()
    torch.save(m.state_dict(), tmp_path / "m.pt")
    fresh = build(name, seed=123)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    dt = torch.rand(*batch["mask"].shape, 3)
    with torch.no_grad():
        assert torch.equal(m.eval().intensity(m.encode(batch), dt), fresh.eval().intensity(fresh.encode(batch), dt))


def test_fixed_hawkes_model_loglik_through_the_task_is_the_closed_form():
    task = make_task(eval_integral="exact")
    te = task.data["test"]
    closed = hawkes_loglik(PARAMS, te, condition_on_first=True).sum() / (te.num_events - len(te))
    out = task.evaluate(truth(), "test")
    assert out["n_events"] == te.num_events - len(te)
    np.testing.assert_allclose(out["loglik"], closed, rtol=1e-6)
    # the approximate integrals converge to it: MC unbiased, midpoint with O(1/S^2) error
    for method, samples, tol in (("mc", 400, 5e-3), ("midpoint", 200, 1e-3)):
        task.cfg.eval_integral, task.cfg.eval_integral_samples = method, samples
        np.testing.assert_allclose(task.evaluate(truth(), "test")["loglik"], closed, rtol=tol)


def test_chunks_predict_every_event_but_the_first_once():
    seqs = EventSequences.from_lists([np.arange(7.0), np.arange(2.0), np.arange(1.0)], [[0] * 7, [1, 0], [1]], 2)
    b = TPPBatcher(seqs, max_len=3)
    assert b.start.tolist() == [0, 2, 4, 7, 9] and b.end.tolist() == [3, 5, 7, 9, 10]
    batch = b.batch(np.arange(len(b)))
    assert int((batch["mask"][:, 1:] & batch["mask"][:, :-1]).sum()) == seqs.num_events - len(seqs)
    assert batch["time"][1].tolist() == [0.0, 1.0, 2.0]  # times restart at each chunk's first event
    assert batch["type"][4].tolist() == [1, 2, 2] and batch["dtime"][4].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", MODELS)
def test_shapes_loss_and_gradients(name):
    task = make_task(n_seqs=10)
    m = build(name).train()
    batch = task.batchers["train"].batch(np.arange(4))
    state = m.encode(batch)
    B, L = batch["mask"].shape
    assert m.intensity(state, torch.rand(B, L, 5)).shape == (B, L, 5, 2)
    loss = m.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    if name != "hawkes_exp" or not m.fixed:
        loss.backward()
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MODELS)
def test_an_event_never_sees_later_events(name):
    task = make_task(n_seqs=8)
    m = build(name)
    batch = task.batchers["train"].batch(np.arange(2))
    L = int(batch["mask"].sum(1).min())
    cut = L // 2
    changed = {k: v.clone() for k, v in batch.items()}
    later = torch.arange(batch["mask"].shape[1]) > cut
    changed["type"][:, later] = (changed["type"][:, later] + 1) % 2 * batch["mask"][:, later] + \
        2 * ~batch["mask"][:, later]
    changed["dtime"][:, later] *= 0.3
    changed["time"] = torch.cumsum(changed["dtime"], 1)
    dt = torch.rand(*batch["mask"].shape, 4) * 3
    with torch.no_grad():
        a = m.intensity(m.encode(batch), dt)[:, :cut + 1]
        b = m.intensity(m.encode(changed), dt)[:, :cut + 1]
        c = m.intensity(m.encode(changed), dt)[:, cut + 1:L]
        d = m.intensity(m.encode(batch), dt)[:, cut + 1:L]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(c, d)  # the perturbation is visible from the changed events on


@pytest.mark.parametrize("name", MODELS)
def test_padding_does_not_change_real_positions(name):
    task = make_task(n_seqs=8)
    m = build(name)
    short = task.batchers["test"].batch(np.array([0]))
    L = short["mask"].shape[1]
    pad = {"time": torch.cat([short["time"], torch.zeros(1, 5)], 1),
           "dtime": torch.cat([short["dtime"], torch.zeros(1, 5)], 1),
           "type": torch.cat([short["type"], torch.full((1, 5), 2)], 1),
           "mask": torch.cat([short["mask"], torch.zeros(1, 5, dtype=torch.bool)], 1)}
    dt = torch.rand(1, L + 5, 3)
    with torch.no_grad():
        a = m.intensity(m.encode(short), dt[:, :L])
        b = m.intensity(m.encode(pad), dt)[:, :L]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_thp_easytpp_layout_has_easytpp_s_parameters():
    """EasyTPP 0.3.0's THP at hidden 32, 2 layers, 3 types has 10,764 parameters (benchmarks/results/
    tpp_vs_easytpp.json); ours in its layout has the same less EasyTPP's per-type bias that repeats the head's."""
    m = models.build("thp", 3, {"blocks": "easytpp", "hidden_size": 32, "inner_size": 64})
    assert sum(p.numel() for p in m.parameters()) == 10_764 - 3
    assert not any(isinstance(x, torch.nn.LayerNorm) for x in m.modules())
    assert all(isinstance(a.out_proj, torch.nn.Identity) for a in m.attns)
    paper = models.build("thp", 3, {"hidden_size": 32, "inner_size": 64})
    assert sum(p.numel() for p in paper.parameters()) == 17_321  # the paper's blocks, as in that JSON


def test_thp_easytpp_layout_is_ffn_of_attention_of_x_plus_z_in_every_layer():
    """The layout written out by hand: x <- FFN(Attn(x + z)) per layer with the one shared FFN, heads only
    concatenated (no output projection), no residual or LayerNorm; then the per-type head."""
    m = build("thp-easytpp")
    batch = make_task(n_seqs=8).batchers["train"].batch(np.arange(3))
    mask, H = batch["mask"], m.cfg.num_heads
    z = m.time_enc(batch["time"]) * mask[..., None]
    x = m.type_emb(batch["type"])
    B, L, d = x.shape
    hidden = (~torch.ones(L, L, dtype=torch.bool).tril()) | ~mask[:, None, :]  # [B, L, L]: future or padding
    with torch.no_grad():
        for attn in m.attns:
            x = x + z
            q, k, v = (torch.nn.functional.linear(x, w, b).view(B, L, H, d // H).transpose(1, 2)
                       for w, b in zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))
            s = (q @ k.transpose(-2, -1) / (d // H) ** 0.5).masked_fill(hidden[:, None], float("-inf"))
            x = m.shared_ffn((torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, L, d))
        want = m.head(x)
        got = m.encode(batch)["base"]
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-6)


def test_time_rescaling_accepts_the_true_process_and_rejects_a_wrong_one():
    task = make_task(n_seqs=200, max_events=40)
    good = task.time_rescaling(truth())
    assert good["integral"] == "exact" and good["n_intervals"] > 1000
    assert good["ks_p"] > 0.01, good
    wrong = HawkesExp.from_params(PARAMS.mu * 3, PARAMS.adjacency, PARAMS.decay)  # three times the baseline
    bad = task.time_rescaling(wrong)
    assert bad["ks_p"] < 1e-6 and bad["ks_d"] > 5 * good["ks_d"], (good, bad)
    # a neural model goes through the midpoint rule
    assert task.time_rescaling(build("nhp"), n_grid=8)["integral"] == "midpoint"


def test_thinning_matches_the_analytic_next_event_distribution():
    task = make_task(n_seqs=20)
    m = truth()
    batch = task.batchers["test"].batch(np.arange(2))
    state = m.encode(batch)
    B, L = batch["mask"].shape
    dmax = 60.0
    gen = torch.Generator().manual_seed(0)
    dt, k, miss = thinning_predict(m, state, dmax, n_samples=400, n_exp=60, generator=gen)
    # E[dt] = int_0^inf S(u) du and P(k) = int_0^inf S(u) lambda_k(u) du with S = exp(-Lambda), on a fine grid
    u = torch.linspace(0, dmax, 20001)
    grid = u.expand(B, L, -1)
    surv = torch.exp(-m.compensator(state, grid).sum(-1))  # [B, L, G]
    mean = torch.trapezoid(surv, u)
    pk = torch.trapezoid(surv[..., None] * m.intensity(state, grid), u, dim=2)  # [B, L, K]
    sd = torch.sqrt(2 * torch.trapezoid(u * surv, u) - mean**2)
    valid = batch["mask"]
    z = ((dt - mean) / (sd / math.sqrt(400)))[valid]
    assert z.abs().max() < 4.5, z.abs().max()
    assert miss.shape == (B, L) and (miss[~valid] == 0).all() and (miss <= 1).all()
    decided = (pk.max(-1).values - pk.min(-1).values)[valid] > 0.1  # clear Bayes decisions
    assert torch.equal(k[valid][decided], pk.argmax(-1)[valid][decided])
    assert float(miss[valid].mean()) < 0.01  # share of the draws left unaccepted


def attnhp_reference(m, batch, dt):
    """AttNHP as EasyTPP computes it: one [2L]-token encoder pass per sample time (events, then queries)."""
    mask, t = batch["mask"], batch["time"]
    B, L = mask.shape
    causal = (torch.ones(L, L, dtype=torch.bool).tril() & mask[:, None, :]) | torch.eye(L, dtype=torch.bool)
    top = torch.cat([causal, torch.zeros(B, L, L, dtype=torch.bool)], -1)  # events never see queries
    bottom = torch.cat([causal & mask[:, :, None], torch.eye(L, dtype=torch.bool).expand(B, L, L)], -1)
    full = torch.cat([top, bottom], 1)  # [B, 2L, 2L]
    pe_ev = m.time_enc(t)
    out = []
    for s in range(dt.shape[-1]):
        pe_q = m.time_enc(t + dt[..., s])
        zs = []
        for stack in m.stacks:
            ev = torch.cat([torch.tanh(m.type_emb(batch["type"])), pe_ev], -1)
            z = torch.zeros(B, L, m.cfg.hidden_size)
            for layer in stack:
                x = torch.cat([ev, torch.cat([z, pe_q], -1)], 1)
                sc = torch.einsum("bid,bjd->bij", layer.q(x), layer.k(x)) * layer.scale
                o = torch.softmax(sc.masked_fill(~full, -torch.inf), -1) @ layer.v(x)
                z = z + torch.tanh(o[:, L:])
                ev = torch.cat([o[:, :L], pe_ev], -1)
            zs.append(z)
        out.append(scaled_softplus(m.out(torch.cat(zs, -1)), m.log_beta.exp()))
    return torch.stack(out, 2)  # [B, L, S, K]


def test_attnhp_one_pass_equals_the_per_sample_encoder():
    task = make_task(n_seqs=10)
    m = build("attnhp")
    batch = task.batchers["train"].batch(np.arange(3))
    dt = torch.rand(*batch["mask"].shape, 4) * 2
    with torch.no_grad():
        fast = m.intensity(m.encode(batch), dt)
        ref = attnhp_reference(m, batch, dt)
    valid = batch["mask"]
    torch.testing.assert_close(fast[valid], ref[valid], rtol=1e-5, atol=1e-6)


def prompttpp_reference(m, batch, dt):
    """PromptTPP written out loop by loop: at each layer, event i's query is the mean of the real event tokens
    0..i, its tau-hat the mean real gap among them; the top-N keys by cosine select the key and value prompts
    [P ; pe(tau-hat)] (through the layer's k / v); then per sample time one [2L]-token pass in which token i (event
    or query) attends to the prompts selected at event i, the real events 0..i and, a query, itself.
    Returns the intensities [B, L, S, K] and the selections [stacks, layers, 2, B, L, N]."""
    mask, t, typ, gap = batch["mask"], batch["time"], batch["type"], batch["dtime"]
    B, L = mask.shape
    c = m.cfg
    ids = torch.zeros(len(m.stacks), len(m.stacks[0]), 2, B, L, c.top_n, dtype=torch.long)

    def prompts(h, n, layer, ev):
        kp = torch.zeros(B, L, c.top_n * c.prompt_length, c.hidden_size)
        vp = torch.zeros_like(kp)
        for b in range(B):
            for i in range(L):
                real = [j for j in range(i + 1) if mask[b, j]]
                q = ev[b, real].mean(0) if real else torch.zeros(ev.shape[-1])
                tau = sum(float(gap[b, j]) for j in real[1:]) / max(len(real) - 1, 1)
                for kind, proj, store in ((0, layer.k, kp), (1, layer.v, vp)):
                    sel = torch.nn.functional.cosine_similarity(q[None], m.prompt_keys[h, n, kind], dim=-1).topk(c.top_n).indices
                    ids[h, n, kind, b, i] = sel
                    tok = m.prompts[h, n, kind][sel].flatten(0, 1)
                    store[b, i] = proj(torch.cat([tok, m.time_enc(torch.tensor(tau)).expand(len(tok), -1)], -1))
        return kp, vp

    pe_ev, out = m.time_enc(t), []
    for s in range(dt.shape[-1]):
        pe_q, zs = m.time_enc(t + dt[..., s]), []
        for h, stack in enumerate(m.stacks):
            ev = torch.cat([torch.tanh(m.type_emb(typ)), pe_ev], -1)
            z = torch.zeros(B, L, c.hidden_size)
            for n, layer in enumerate(stack):
                kp, vp = prompts(h, n, layer, ev)
                x = torch.cat([ev, torch.cat([z, pe_q], -1)], 1)  # events, then queries: [B, 2L, D]
                Q, K, V = layer.q(x), layer.k(x), layer.v(x)
                new = torch.zeros(B, 2 * L, c.hidden_size)
                for b in range(B):
                    for r in range(2 * L):
                        i, query = r % L, r >= L
                        seen = [j for j in range(i + 1) if mask[b, j]] if mask[b, i] else ([] if query else [i])
                        seen = seen + ([r] if query else [])
                        a = torch.softmax(torch.cat([kp[b, i], K[b, seen]]) @ Q[b, r] * layer.scale, 0)
                        new[b, r] = a @ torch.cat([vp[b, i], V[b, seen]])
                z = z + torch.tanh(new[:, L:])
                ev = torch.cat([new[:, :L], pe_ev], -1)
            zs.append(z)
        out.append(scaled_softplus(m.out(torch.cat(zs, -1)), m.log_beta.exp()))
    return torch.stack(out, 2), ids


def test_prompttpp_one_pass_equals_the_loop_by_loop_reference_and_its_prompts_matter():
    """The prompts reach the intensity as the method says (selection and attention against a naive reference),
    and they matter: other selected prompts give another intensity (a PromptTPP that ignored them would be AttNHP)."""
    s = simulate_hawkes(PARAMS, 12, max_events=12, seed=0).seqs
    batch = TPPBatcher(s, None).batch(np.arange(4))
    torch.manual_seed(0)
    m = models.build("prompttpp", 2, {"hidden_size": 12, "time_emb_size": 6, "pool_size": 6, "top_n": 3,
                                      "prompt_length": 2}).eval()
    dt = torch.rand(*batch["mask"].shape, 2) * 2
    valid = batch["mask"]
    with torch.no_grad():
        state = m.encode(batch)
        fast = m.intensity(state, dt)
        ref, ids = prompttpp_reference(m, batch, dt)
        for h in range(len(m.stacks)):
            for n in range(len(m.stacks[0])):
                assert torch.equal(state["prompt_ids"][h, n][:, valid], ids[h, n][:, valid])
        torch.testing.assert_close(fast[valid], ref[valid], rtol=1e-5, atol=1e-6)
        chosen = torch.zeros(m.prompts.shape[3], dtype=torch.bool)
        chosen[state["prompt_ids"][0, 0, 1][valid].unique()] = True
        m.prompts[0, 0, 1, chosen] += 1.0  # only value prompts that were selected
        assert (m.intensity(m.encode(batch), dt)[valid] - fast[valid]).abs().max() > 1e-3


def test_prompt_selection_is_per_sequence_and_independent_of_the_batch():
    task = make_task(n_seqs=20)
    m = build("prompttpp")
    b = task.batchers["train"]
    order = np.argsort(-b.lengths)
    alone = b.batch(order[[3]])  # a sequence shorter than the longest, so padded in the big batch
    crowd = b.batch(order[[0, 5, 3, 7]])
    L = alone["mask"].shape[1]
    dt = torch.rand(1, L, 4)
    dt_crowd = torch.rand(4, crowd["mask"].shape[1], 4)
    dt_crowd[2, :L] = dt[0]
    with torch.no_grad():
        s1, s2 = m.encode(alone), m.encode(crowd)
        lam1, lam2 = m.intensity(s1, dt), m.intensity(s2, dt_crowd)
    valid = alone["mask"][0]
    assert torch.equal(s1["prompt_ids"][:, :, :, 0][..., valid, :], s2["prompt_ids"][:, :, :, 2, :L][..., valid, :])
    torch.testing.assert_close(lam1[0, valid], lam2[2, :L][valid], rtol=1e-5, atol=1e-6)


def test_prompttpp_loss_adds_the_key_pull_on_the_per_event_scale():
    task = make_task(n_seqs=10)
    m = models.build("prompttpp", 2, {"integral": "midpoint", "pull_weight": 0.5})
    batch = task.batchers["train"].batch(np.arange(3))
    with torch.no_grad():
        state = m.encode(batch)
    assert -1.0 <= state["pull"].item() <= 1.0  # a mean cosine
    with torch.no_grad():
        ll = loglik(m, batch, m.cfg.integral_samples, "midpoint", state=state)
        nll = -(ll.per_event.sum() / ll.mask.sum())
        torch.testing.assert_close(m.loss(batch), nll - 0.5 * state["pull"])
    m.loss(batch).backward()
    assert m.prompt_keys.grad.abs().sum() > 0 and m.prompts.grad.abs().sum() > 0


def test_diversified_selection_avoids_the_entries_earlier_tasks_used_and_only_in_training():
    task = make_task(n_seqs=10)
    torch.manual_seed(0)
    m = models.build("prompttpp", 2, {"diversify": True, "dropout": 0.0})
    plain = models.build("prompttpp", 2, {})
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("select_")})
    batch = task.batchers["train"].batch(np.arange(4))
    n_real = int(batch["mask"].sum())
    m.train()
    with torch.no_grad():
        first = m.encode(batch)["prompt_ids"]  # no earlier task yet: plain cosine top-n
        m.eval(), plain.eval()
        assert torch.equal(first, plain.encode(batch)["prompt_ids"])
    assert (m.select_counts.sum(-1) == n_real * m.cfg.top_n).all()  # every real position, both pools
    m.end_task()
    torch.testing.assert_close(m.select_freq.sum(-1), torch.ones(m.select_freq.shape[:-1]))
    used = m.select_freq > 0  # [H, N, 2, M]
    m.train()
    with torch.no_grad():
        again = m.encode(batch)["prompt_ids"]  # [H, N, 2, B, L, top_n]
    top_n = m.cfg.top_n
    fresh = (~used).sum(-1)  # entries the first task never chose, per pool
    for h, n, k in np.ndindex(*used.shape[:3]):
        ids = again[h, n, k][batch["mask"]]  # [n_real, top_n]
        picked_fresh = (~used[h, n, k])[ids].sum(-1)
        assert (picked_fresh == min(int(fresh[h, n, k]), top_n)).all()  # unused entries come first
    m.eval()
    with torch.no_grad():  # evaluation ignores the frequencies
        assert torch.equal(m.encode(batch)["prompt_ids"], plain.encode(batch)["prompt_ids"])
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    plain.end_task()  # without diversify: nothing recorded, nothing changed
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())


def test_time_encoding_is_sinusoidal():
    enc = SinusoidalTimeEncoding(4)
    t = torch.tensor([0.0, 1.0])
    np.testing.assert_allclose(enc(t), [[0, 1, 0, 1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]],
                               atol=1e-6)


def test_trainer_fits_a_tpp_model(tmp_path):
    from behaviorseq.train.trainer import Trainer

    task = make_task(n_seqs=40, max_events=20)
    cfg = TrainConfig(epochs=2, batch_size=8, early_stop_metric="loglik", device="cpu", lr=0.01)
    task.train_cfg = cfg
    m = models.build("nhp", 2, {"hidden_size": 8})
    state = Trainer(m, task, cfg, tmp_path).fit()
    assert state["epoch"] == 2 and math.isfinite(state["best"])
    assert (tmp_path / "checkpoints" / "best.pt").exists()


def test_nhp_learns_a_2d_hawkes_process_close_to_the_truth():
    t0 = time.perf_counter()
    task = make_task(n_seqs=700, max_events=50, seed=1)
    torch.manual_seed(0)
    m = models.build("nhp", 2, {})
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for epoch in range(4):
        loader, _ = task.train_loader(epoch)
        for batch in loader:
            opt.zero_grad()
            m.loss(batch).backward()
            opt.step()
    got, best = task.evaluate(m, "valid")["loglik"], task.evaluate(truth(), "valid")["loglik"]
    assert got > best * 1.03, (got, best)  # within 3% of the true model (log-likelihoods are negative)
    assert time.perf_counter() - t0 < 60


def test_loglik_rejects_unknown_integral_and_missing_fields():
    m = truth()
    with pytest.raises(ValueError, match="integral method"):
        loglik(m, {}, method="simpson")
    with pytest.raises(KeyError, match="lacks field"):
        m.encode({"time": torch.zeros(1, 2)})


@pytest.mark.parametrize("name", TPP_MODELS)
def test_a_batch_of_single_events_has_no_terms_and_a_zero_loss(name):
    """Sequences of one event predict nothing (the first event is conditioned on); no crash on L = 1."""
    m = models.build(name, 3, {})
    batch = {"time": torch.zeros(2, 1), "dtime": torch.zeros(2, 1), "type": torch.tensor([[0], [2]]),
             "mask": torch.ones(2, 1, dtype=torch.bool)}
    assert loglik(m, batch).per_event.shape == (2, 0)
    loss = m.loss(batch)
    if name == "prompttpp":  # only the key-pull term is left: minus a weighted mean cosine, in [-0.1, 0.1]
        assert abs(loss.item()) <= m.cfg.pull_weight + 1e-6
    else:
        assert loss.item() == 0.0
    if loss.requires_grad:
        loss.backward()


@pytest.mark.parametrize("name", TPP_MODELS)
def test_loss_trains_under_autocast(name):
    """The trainer runs CUDA autocast with train.amp=true; CPU bf16 autocast is the check available here.
    NHP's hand-written kernels run in fp32 inside it, so its loss is the fp32 loss exactly."""
    torch.manual_seed(0)
    m = models.build(name, 3, {})
    dt = torch.rand(4, 6)
    dt[:, 0] = 0
    batch = {"time": dt.cumsum(1), "dtime": dt, "type": torch.randint(0, 3, (4, 6)), "mask": torch.ones(4, 6, dtype=torch.bool)}
    torch.manual_seed(1)
    plain = m.loss(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        loss = m.loss(batch)
    assert torch.isfinite(loss)
    if name == "nhp":
        assert loss.dtype == torch.float32 and loss.item() == plain.item()
    if loss.requires_grad:
        loss.backward()


class _Spike:
    """One event type, intensity 0.1 + 2.4 exp(-3 dt) after every position: a spike raises the thinning bound
    far above the tail, so one block of candidates runs out long before dtime_max."""

    def intensity(self, state, tau):
        return (0.1 + 2.4 * torch.exp(-3 * tau))[..., None]


def test_thinning_keeps_proposing_until_a_candidate_is_accepted_or_passes_dtime_max():
    dmax, n = 60.0, 20
    state = {"mask": torch.ones(1, 2000, dtype=torch.bool)}
    dt, _, miss = thinning_predict(_Spike(), state, dmax, n_samples=n, n_exp=50,
                                   generator=torch.Generator().manual_seed(0))
    u = torch.linspace(0, dmax, 200_001, dtype=torch.float64)
    surv = torch.exp(-(0.1 * u + 0.8 * (1 - torch.exp(-3 * u))))
    mean, p_miss = float(torch.trapezoid(surv, u)), float(surv[-1])  # E[min(T, dmax)], P(T > dmax)
    assert abs(float(dt.mean()) - mean) < 0.25, (float(dt.mean()), mean)  # one block only: 8.9 against 4.59
    assert abs(float(miss.mean()) - p_miss) < 0.01, (float(miss.mean()), p_miss)
