"""The TPP speed paths give the plain formulas' numbers, and THP's optional baseline does what it says."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from behaviorseq import models
from behaviorseq.models.tpp import nhp as nhp_module
from behaviorseq.nn.activations import tanh
from behaviorseq.nn.time_encoding import scaled_softplus
from behaviorseq.nn.tpp import loglik


def _batch(B: int = 4, L: int = 9, K: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([L, L - 3, 2, L - 1][:B])
    mask = torch.arange(L)[None] < lens[:, None]
    dt = torch.rand(B, L, generator=g) * mask
    dt[:, 0] = 0
    return {"time": dt.cumsum(1) * mask, "dtime": dt, "type": torch.where(mask, torch.randint(0, K, (B, L), generator=g), K),
            "mask": mask}


def _nhp_reference(state: dict, w: torch.Tensor, log_s: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """NHP Eq. 7 and the scaled softplus with plain autograd ops: lambda [B, L, S, K]."""
    c, cb = state["c"][:, :, None], state["c_bar"][:, :, None]
    c_t = cb + (c - cb) * torch.exp(-state["delta"][:, :, None] * dt[..., None])
    return scaled_softplus(F.linear(state["o"][:, :, None] * torch.tanh(c_t), w), log_s.exp())


def test_nhp_fused_intensity_matches_autograd_across_chunks(monkeypatch):
    monkeypatch.setattr(nhp_module, "_chunks", lambda B, L, S, H: [slice(i, i + 3) for i in range(0, B, 3)])
    torch.manual_seed(0)
    m = models.build("nhp", 3, {"hidden_size": 8}).double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in _batch(B=4).items()}
    dt = torch.rand(4, 9, 5, dtype=torch.double)
    state = m.encode(batch)
    fast = m.intensity(state, dt)
    ref = _nhp_reference(state, m.w.weight, m.log_s, dt)
    torch.testing.assert_close(fast, ref)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, list(m.parameters()), g, retain_graph=True, allow_unused=True)
    grads_ref = torch.autograd.grad(ref, list(m.parameters()), g, allow_unused=True)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b)


def test_nhp_fused_logits_pass_gradcheck():
    torch.manual_seed(1)
    c, cb, o = (torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True) for _ in range(3))
    d = torch.rand(3, 4, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    dt = torch.rand(3, 4, 6, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda *x: nhp_module._DecayedLogits.apply(*x, dt), (c, cb, d, o, w))


def _ctlstm_reference(m, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NHP's CT-LSTM (Mei & Eisner, Eqs. 5-7) with plain autograd ops, one event at a time."""
    emb = m.type_emb(batch["type"])
    B, L, H = emb.shape
    dt = batch["dtime"].to(emb.dtype)
    c = cb = delta = o = emb.new_zeros(B, H)
    out = {k: [] for k in ("c", "c_bar", "delta", "o", "h_left")}
    for i in range(L):
        c_t = cb + (c - cb) * torch.exp(-delta * dt[:, i:i + 1])  # c(t_i)
        h = o * torch.tanh(c_t)  # h(t_i); 0 before the first event
        gi, gf, gz, go, gib, gfb, gd = m.gates(torch.cat([emb[:, i], h], -1)).chunk(7, -1)
        z = torch.tanh(gz)
        c, cb = torch.sigmoid(gf) * c_t + torch.sigmoid(gi) * z, torch.sigmoid(gfb) * cb + torch.sigmoid(gib) * z
        delta, o = F.softplus(gd), torch.sigmoid(go)
        for k, v in (("c", c), ("c_bar", cb), ("delta", delta), ("o", o), ("h_left", h)):
            out[k].append(v)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def test_nhp_recurrence_matches_autograd():
    """The hand-written CT-LSTM backward gives autograd's gradients, padding and the first event included."""
    torch.manual_seed(4)
    m = models.build("nhp", 3, {"hidden_size": 6}).double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in _batch(B=4).items()}
    fast, ref = m.encode(batch), _ctlstm_reference(m, batch)
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k])
    gs = {k: torch.randn_like(v) for k, v in ref.items()}
    params = list(m.parameters())
    g_fast = torch.autograd.grad(sum((fast[k] * gs[k]).sum() for k in gs), params, allow_unused=True)
    g_ref = torch.autograd.grad(sum((ref[k] * gs[k]).sum() for k in gs), params, allow_unused=True)
    for a, b in zip(g_fast, g_ref):  # the padding type's embedding row gets no gradient in either
        torch.testing.assert_close(a, b)
    table = torch.randn(4, 7 * 5, dtype=torch.double, requires_grad=True)
    w_h = torch.randn(7 * 5, 5, dtype=torch.double, requires_grad=True)
    types, dt = torch.randint(0, 4, (6, 3)), torch.rand(6, 3, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda t, w: nhp_module._CTLSTM.apply(t, types, w, dt), (table, w_h))


class _WithoutNextEvent:
    """A model seen through the generic loglik path only (no ``next_event_intensity``)."""

    def __init__(self, model):
        self.encode, self.intensity = model.encode, model.intensity


def test_nhp_next_event_intensity_is_the_intensity_at_the_next_event():
    torch.manual_seed(5)
    m = models.build("nhp", 3, {}).double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in _batch().items()}
    state = m.encode(batch)
    mask = batch["mask"][:, 1:] & batch["mask"][:, :-1]
    at_events = m.intensity(state, batch["dtime"][:, :, None].roll(-1, 1))[:, :-1, 0]  # lambda(t_i + dtime_{i+1})
    torch.testing.assert_close(m.next_event_intensity(state)[mask], at_events[mask])
    for method in ("mc", "midpoint"):
        fast = loglik(m, batch, 7, method, generator=torch.Generator().manual_seed(0))
        plain = loglik(_WithoutNextEvent(m), batch, 7, method, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(fast.per_event, plain.per_event)


@pytest.mark.parametrize("name", ["nhp", "thp", "attnhp"])
def test_loglik_equals_one_call_on_all_points(name):
    """loglik evaluates the events and the integral points in two calls; one call on [1 + S] points agrees."""
    torch.manual_seed(2)
    m = models.build(name, 3, {}).eval()
    batch = _batch()
    state = m.encode(batch)
    S = 7
    ll = loglik(m, batch, S, "midpoint", state=state)
    mask = batch["mask"][:, 1:] & batch["mask"][:, :-1]
    gap = torch.cat([torch.where(mask, batch["dtime"][:, 1:], 0.0), torch.zeros(4, 1)], 1)
    u = (torch.arange(S) + 0.5) / S
    lam = m.intensity(state, torch.cat([gap[..., None], u * gap[..., None]], -1))  # [B, L, 1 + S, K]
    integral = (gap * lam[:, :, 1:].sum(-1).mean(-1))[:, :-1]
    lam_k = lam[:, :-1, 0].gather(-1, batch["type"][:, 1:].clamp(max=2)[..., None])[..., 0]
    torch.testing.assert_close(ll.integral, torch.where(mask, integral, 0.0))
    torch.testing.assert_close(ll.log_intensity, torch.where(mask, lam_k.log(), 0.0))


def test_thp_intensity_layout_matches_eq6():
    torch.manual_seed(3)
    m = models.build("thp", 3, {}).eval()
    state = m.encode(_batch())
    dt = torch.rand(4, 9, 5)
    ref = scaled_softplus(state["base"][:, :, None] + m.alpha * dt[..., None], m.log_beta.exp())
    torch.testing.assert_close(m.intensity(state, dt), ref)


def test_thp_baseline_is_off_by_default_and_floors_the_intensity():
    plain = models.build("thp", 3, {})
    assert not plain.cfg.baseline and not any("baseline" in k for k in plain.state_dict())
    m = models.build("thp", 3, {"baseline": True}).eval()
    with torch.no_grad():
        m.alpha.fill_(-1.0)  # decaying current influence
        m.baseline_raw.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    mu = F.softplus(m.baseline_raw)
    state = m.encode(_batch())
    far = m.intensity(state, torch.full((4, 9, 1), 1e3))[:, :, 0]  # [B, L, K]
    torch.testing.assert_close(far, mu.expand_as(far).detach())
    near = m.intensity(state, torch.rand(4, 9, 5))
    assert (near >= mu.detach()).all()
    # without the floor the paper's intensity decays to 0 (alpha_k starts at -0.1)
    assert plain.eval().intensity(plain.encode(_batch()), torch.full((4, 9, 1), 1e3)).max() < 1e-6


def test_sigmoid_tanh_matches_torch_tanh_and_its_gradient():
    x = torch.linspace(-12, 12, 2001, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(tanh, (x[::100].detach().requires_grad_(),))
    torch.testing.assert_close(tanh(x.float()), torch.tanh(x.float()), atol=3e-7, rtol=0)
    g = torch.randn(2001, dtype=torch.double)
    torch.testing.assert_close(torch.autograd.grad(tanh(x), x, g)[0], torch.autograd.grad(torch.tanh(x), x, g)[0])
