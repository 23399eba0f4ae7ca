"""NHP: The Neural Hawkes Process, a continuous-time LSTM (Mei & Eisner, NeurIPS 2017).

After event i (type k_i at t_i) the CT-LSTM reads the type embedding and its hidden state at t_i
(the gates take [emb(k_i); h(t_i)]):

    i, f, o = sigmoid(.), z = tanh(.), i_bar, f_bar = sigmoid(.), delta = softplus(.)
    c_{i+1} = f * c(t_i) + i * z                 c_bar_{i+1} = f_bar * c_bar_i + i_bar * z
    c(t) = c_bar_{i+1} + (c_{i+1} - c_bar_{i+1}) * exp(-delta_{i+1} (t - t_i))   for t in (t_i, t_{i+1}]
    h(t) = o_{i+1} * tanh(c(t))
    lambda_k(t) = f_k(w_k^T h(t)),  f_k(x) = s_k log(1 + exp(x / s_k))   (the scaled softplus)

The recurrence is a loop over positions (inherent to an RNN), vectorised over the batch; intensities
at any number of times per interval are then one closed-form evaluation ([B, L, S, H]).

Deviations, one line each:
- No BOS event: the first event starts the sequence from zero states and is conditioned on (as in
  EasyTPP's NHP), so the log-likelihood counts events 2..L.
- Defaults follow EasyTPP's example config (hidden 32); the paper tunes the size per data set.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.time_encoding import scaled_softplus
from behaviorseq.nn.tpp import check_batch, nll_per_event


class NHPConfig(StrictConfig):
    hidden_size: int = Field(32, gt=0)  # CT-LSTM cells; the type embedding has the same size
    integral: Literal["mc", "midpoint"] = "mc"  # paper: Monte Carlo
    integral_samples: int = Field(20, gt=0)  # per interval; EasyTPP's loss_integral_num_sample_per_step


@register("nhp")
class NHP(nn.Module):
    Config = NHPConfig
    padding = "right"
    fields = ("time", "dtime", "type", "mask")

    def __init__(self, cfg: NHPConfig, num_types: int):
        super().__init__()
        self.cfg, self.num_types = cfg, num_types
        H = cfg.hidden_size
        self.type_emb = nn.Embedding(num_types + 1, H, padding_idx=num_types)  # row K = padding
        self.gates = nn.Linear(2 * H, 7 * H)  # i, f, z, o, i_bar, f_bar, delta
        self.w = nn.Linear(H, num_types, bias=False)  # w_k
        self.log_s = nn.Parameter(torch.zeros(num_types))  # s_k = exp(log_s_k) > 0, init 1

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        check_batch(batch, self.fields)
        mask, dtime = batch["mask"], batch["dtime"].float()
        emb = self.type_emb(batch["type"])  # [B, L, H]
        B, L, H = emb.shape
        w_emb, w_h = self.gates.weight[:, :H], self.gates.weight[:, H:]  # the gates read [emb(k_i); h(t_i)]
        # every event's share of the gates in one matmul; unbind (not indexing) keeps the backward to one stack
        pre = nn.functional.linear(emb, w_emb, self.gates.bias).unbind(1)  # L x [B, 7H]
        dts = dtime.unbind(1)
        out_c, out_cb, out_d, out_o = [], [], [], []
        c = c_bar = c_t = delta = o = None  # zero states before the first event: h(t_0) = 0
        for i in range(L):
            g = pre[i]
            if i:  # decay the previous interval's cell to t_i
                c_t = torch.addcmul(c_bar, c - c_bar, torch.exp(-delta * dts[i][:, None]))
                g = torch.addmm(g, o * torch.tanh(c_t), w_h.t())
            gi, gf, _, go, gib, gfb, _ = torch.sigmoid(g).chunk(7, -1)  # one call for the five sigmoid gates
            z = torch.tanh(g[:, 2 * H:3 * H])
            c = gi * z if c_t is None else torch.addcmul(gi * z, gf, c_t)
            c_bar = gib * z if c_bar is None else torch.addcmul(gib * z, gfb, c_bar)
            delta, o = nn.functional.softplus(g[:, 6 * H:]), go
            out_c.append(c), out_cb.append(c_bar), out_d.append(delta), out_o.append(o)
        return {"c": torch.stack(out_c, 1), "c_bar": torch.stack(out_cb, 1), "delta": torch.stack(out_d, 1),
                "o": torch.stack(out_o, 1), "mask": mask}  # each [B, L, H]

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> lambda [B, L, S, K] on the interval after each event."""
        logits = _DecayedLogits.apply(state["c"], state["c_bar"], state["delta"], state["o"], self.w.weight, dt)
        return scaled_softplus(logits, self.log_s.exp())

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)


def _decay_tanh(c: Tensor, cb: Tensor, d: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """tanh(c(t_i + dt)) [B, L, S, H] (NHP Eq. 7, before the output gate) and exp(-delta dt) for the backward."""
    e = torch.exp_((-d)[:, :, None] * dt[..., None])  # [B, L, S, H]
    return _tanh_(torch.addcmul(cb[:, :, None], (c - cb)[:, :, None], e)), e


def _tanh_(x: Tensor) -> Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 in place: torch's CPU tanh is about 5x slower than its sigmoid, and this
    is NHP's largest cost (absolute error <= 2e-7)."""
    return torch.sigmoid_(x.mul_(2)).mul_(2).sub_(1)


class _DecayedLogits(torch.autograd.Function):
    """``w_k^T h(t_i + dt)`` [B, L, S, K] from the cell states [B, L, H] and dt [B, L, S].

    The [B, L, S, H] intermediates are the cost of NHP's loss (S = the integral points). Here they are made
    a few sequences at a time, so they stay in cache, and never stored: the backward pass recomputes them
    chunk by chunk and applies the chain rule by hand (checked against autograd in the tests); there the
    output gate is folded into w per event (w^T (o * tanh c) = (o * w)^T tanh c), so h is not formed.
    No gradient flows to dt (data)."""

    @staticmethod
    def forward(ctx, c: Tensor, cb: Tensor, d: Tensor, o: Tensor, w: Tensor, dt: Tensor) -> Tensor:
        ctx.save_for_backward(c, cb, d, o, w, dt)
        out = dt.new_empty(*dt.shape, w.shape[0])
        for sl in _chunks(*dt.shape, c.shape[-1]):
            h = _decay_tanh(c[sl], cb[sl], d[sl], dt[sl])[0].mul_(o[sl][:, :, None])  # [b, L, S, H]
            out[sl] = (w @ h.view(-1, h.shape[-1]).t()).t().view(out[sl].shape)  # K rows: faster than h @ w^T
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        c, cb, d, o, w, dt = ctx.saved_tensors
        gc, gcb, gd, go = (torch.empty_like(x) for x in (c, cb, d, o))
        gw = torch.zeros_like(w)
        for sl in _chunks(*dt.shape, c.shape[-1]):
            th, e = _decay_tanh(c[sl], cb[sl], d[sl], dt[sl])
            gs, osl = g[sl], o[sl]  # [b, L, S, K], [b, L, H]
            m = gs.transpose(-1, -2) @ th  # [b, L, K, H]: sum_s g_k(s) tanh c(s)
            go[sl] = (m * w).sum(2)  # d/do_h = sum_k w_kh m_kh
            gw += (m * osl[:, :, None]).sum((0, 1))  # d/dw_kh = sum_events o_h m_kh
            gct = torch.ops.aten.tanh_backward(gs @ (osl[:, :, None] * w), th)  # d loss / d c(t) [b, L, S, H]
            gct_sum = gct.sum(2)  # [b, L, H]
            a = gct.mul_(e)  # d loss / d c(t) * d c(t) / d c
            # sum_s a and sum_s a * dt in one batched product: [b, L, 2, S] @ [b, L, S, H]
            both = torch.stack([torch.ones_like(dt[sl]), dt[sl]], 2) @ a  # [b, L, 2, H]
            gc[sl] = both[:, :, 0]
            gcb[sl] = gct_sum - both[:, :, 0]  # d c(t) / d c_bar = 1 - e
            gd[sl] = -both[:, :, 1] * (c[sl] - cb[sl])
        return gc, gcb, gd, go, gw, None


def _chunks(B: int, L: int, S: int, H: int, elements: int = 2**19) -> list[slice]:
    """Row slices of [B, ...] whose [rows, L, S, H] tensors hold about ``elements`` floats (2 MB)."""
    rows = max(1, elements // (L * S * H))
    return [slice(i, i + rows) for i in range(0, B, rows)]
