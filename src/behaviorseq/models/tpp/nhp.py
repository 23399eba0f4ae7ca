"""NHP: The Neural Hawkes Process, a continuous-time LSTM (Mei & Eisner, NeurIPS 2017).

After event i (type k_i at t_i) the CT-LSTM reads the type embedding and its hidden state at t_i
(the gates take [emb(k_i); h(t_i)]):

    i, f, o = sigmoid(.), z = tanh(.), i_bar, f_bar = sigmoid(.), delta = softplus(.)
    c_{i+1} = f * c(t_i) + i * z                 c_bar_{i+1} = f_bar * c_bar_i + i_bar * z
    c(t) = c_bar_{i+1} + (c_{i+1} - c_bar_{i+1}) * exp(-delta_{i+1} (t - t_i))   for t in (t_i, t_{i+1}]
    h(t) = o_{i+1} * tanh(c(t))
    lambda_k(t) = f_k(w_k^T h(t)),  f_k(x) = s_k log(1 + exp(x / s_k))   (the scaled softplus)

The recurrence is a loop over positions (inherent to an RNN), vectorised over the batch, with a
hand-written backward (``_CTLSTM``); intensities at any number of times per interval are then one
closed-form evaluation ([B, L, S, H]) in cache-sized chunks (``_DecayedLogits``). The left limits h(t_i)
the recurrence computes give the intensities at the observed events directly (``next_event_intensity``).

Deviations, one line each:
- No BOS event: the first event starts the sequence from zero states and is conditioned on (as in
  EasyTPP's NHP), so the log-likelihood counts events 2..L.
- Defaults follow EasyTPP's example config (hidden 32); the paper tunes the size per data set.
- Runs in fp32 under AMP (autocast off inside encode / intensity): the hand-written kernels take one dtype,
  and at hidden 32 half precision saves nothing.
"""

from __future__ import annotations

import math
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
        with torch.autocast(batch["type"].device.type, enabled=False):  # fp32 under AMP (module docstring)
            return self._encode(batch)

    def _encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        K = self.num_types
        rows = self.type_emb(torch.arange(K + 1, device=batch["type"].device))  # [K + 1, H]; row K = padding = 0
        H = rows.shape[1]
        # The gates read [emb(k_i); h(t_i)]: the emb half depends on the type only, so it is a [K + 1, 7H] table
        # looked up per event (no [B, L, 7H] matmul, nor its backward).
        table = nn.functional.linear(rows, self.gates.weight[:, :H], self.gates.bias)
        c, c_bar, delta, o, h_left = _CTLSTM.apply(table, batch["type"].t().contiguous(), self.gates.weight[:, H:],
                                                   batch["dtime"].to(table.dtype).t().contiguous())
        return {"c": c, "c_bar": c_bar, "delta": delta, "o": o, "h_left": h_left, "mask": batch["mask"]}  # [B, L, H]

    def next_event_intensity(self, state: dict[str, Tensor]) -> Tensor:
        """lambda(t_{i+1}) [B, L-1, K] from the left limits h(t_{i+1}) the recurrence computed (the same
        numbers as ``intensity(state, dtime)``, without a second decay of the cells)."""
        with torch.autocast(state["h_left"].device.type, enabled=False):
            return scaled_softplus(nn.functional.linear(state["h_left"][:, 1:], self.w.weight), self.log_s.exp())

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> lambda [B, L, S, K] on the interval after each event (a view of the [K, B, L, S]
        tensor that the kernel's [K, H] @ [H, points] products give)."""
        with torch.autocast(dt.device.type, enabled=False):
            logits = _DecayedLogits.apply(state["c"], state["c_bar"], state["delta"], state["o"], self.w.weight,
                                          dt.to(state["c"].dtype))
            return scaled_softplus(logits, self.log_s.exp()[:, None, None, None]).permute(1, 2, 3, 0)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)


# exp(x) = exp2(x log2 e): torch's CPU exp2 is about 4.5x faster than its exp (benchmarks/torch_cpu_ops.py) (relative error ~1e-6 at |x| = 20)
_LOG2E = 1.0 / math.log(2.0)


class _CTLSTM(torch.autograd.Function):
    """The CT-LSTM recurrence over L events, with a hand-written backward.

    ``table`` [K + 1, 7H] (each type's share of the gates, bias included), ``types`` and ``dt`` [L, B]
    (time-major), ``w_h`` [7H, H] -> c, c_bar, delta, o and h_left [B, L, H] (h(t_i) just before event i,
    the recurrent input of step i; 0 at i = 0). Autograd over the per-step ops costs more
    than the ops themselves at these sizes ([B, H] = [256, 32]), so the forward keeps each step's tensors in
    lists (small and cache-resident) and the backward walks them in reverse (checked against autograd in
    the tests). tanh(x) is computed as 2 sigmoid(2x) - 1 (torch's CPU tanh is about 10x slower than its
    sigmoid; absolute error <= 2e-7): the z block's pre-activation is doubled, so one sigmoid serves the
    seven blocks."""

    @staticmethod
    def forward(ctx, table: Tensor, types: Tensor, w_h: Tensor, dt: Tensor):
        L, H = types.shape[0], w_h.shape[1]
        scale = table.new_ones(7 * H)
        scale[2 * H:3 * H] = 2
        tab, wt = table * scale, (w_h * scale[:, None]).t().contiguous()  # z block doubled
        ndt = (dt * -_LOG2E)[..., None]  # [L, B, 1]
        S, Z, C, CB, D, CT, TH, E, HH = ([] for _ in range(9))  # per step; CT..HH from step 1 on
        for i in range(L):
            x = tab.index_select(0, types[i])  # [B, 7H] pre-activations of i, f, 2z, o, i_bar, f_bar, delta
            if i:  # decay the previous interval's cell to t_i and add the recurrent input h(t_i)
                e = torch.exp2(D[-1] * ndt[i])
                ct = torch.addcmul(CB[-1], C[-1] - CB[-1], e)
                th = torch.sigmoid(ct * 2).mul_(2).sub_(1)
                hh = th * S[-1][:, 3 * H:4 * H]
                x.addmm_(hh, wt)
                CT.append(ct), TH.append(th), E.append(e), HH.append(hh)
            D.append(nn.functional.softplus(x[:, 6 * H:]))
            s = torch.sigmoid_(x)  # delta's block keeps sigmoid(x) = softplus'(x) for the backward
            z = s[:, 2 * H:3 * H] * 2 - 1
            c, cb = s[:, :H] * z, s[:, 4 * H:5 * H] * z
            if i:
                c.addcmul_(s[:, H:2 * H], ct), cb.addcmul_(s[:, 5 * H:6 * H], CB[-1])
            S.append(s), Z.append(z), C.append(c), CB.append(cb)
        ctx.save_for_backward(table, types, w_h, dt, scale, *S, *Z, *C, *CB, *CT, *TH, *E, *HH)  # freed after backward
        return tuple(torch.stack(x, 1) for x in (C, CB, D, [s[:, 3 * H:4 * H] for s in S], [torch.zeros_like(C[0])] + HH))

    @staticmethod
    def backward(ctx, gc: Tensor, gcb: Tensor, gd: Tensor, go: Tensor, ghl: Tensor):
        table, types, w_h, dt, scale, *steps = ctx.saved_tensors
        L = types.shape[0]
        S, Z, C, CB = (steps[j * L:(j + 1) * L] for j in range(4))
        CT, TH, E, HH = (steps[4 * L + j * (L - 1):4 * L + (j + 1) * (L - 1)] for j in range(4))
        B, H = C[0].shape
        # d s / d x = s (w0 - v s): s (1 - s) for the sigmoid gates, 2 s (1 - s) for z = 2 s - 1, s for delta
        v = scale.clone()
        v[6 * H:] = 0
        w0 = v.clone()
        w0[6 * H:] = 1
        w0, v = w0.expand(B, -1).contiguous(), v.expand(B, -1).contiguous()
        ws = w_h * scale[:, None]
        gc, gcb, gd, go, ghl = (x.unbind(1) for x in (gc, gcb, gd, go, ghl))
        gtab, gws = torch.zeros_like(table), torch.zeros_like(w_h)
        zero = gc[0].new_zeros(B, H)
        dc_n = dcb_n = dd_n = do_n = zero  # gradients arriving from step i + 1
        for i in range(L - 1, -1, -1):
            s, z = S[i], Z[i]
            dc, dcb = gc[i] + dc_n, gcb[i] + dcb_n
            g = torch.cat([dc * z, dc * CT[i - 1] if i else zero, torch.addcmul(dc * s[:, :H], dcb, s[:, 4 * H:5 * H]),
                           go[i] + do_n, dcb * z, dcb * CB[i - 1] if i else zero, gd[i] + dd_n], 1)
            g.mul_(torch.addcmul(w0, s, v, value=-1).mul_(s))  # d loss / d x
            gtab.index_add_(0, types[i], g)
            if i:
                th, e = TH[i - 1], E[i - 1]
                gws.addmm_(g.t(), HH[i - 1])
                dh = torch.addmm(ghl[i], g, ws)  # d loss / d h(t_i)
                do_n = dh * th
                dct = (dc * s[:, H:2 * H]).addcmul_(dh * S[i - 1][:, 3 * H:4 * H], 1 - th.square())
                dc_n = dct * e
                dcb_n = (dct - dc_n).addcmul_(dcb, s[:, 5 * H:6 * H])
                dd_n = dct * (CB[i - 1] - C[i - 1]).mul_(e).mul_(dt[i, :, None])
        return gtab * scale, None, gws * scale[:, None], None


def _decayed_sigmoid(c2: Tensor, cb2: Tensor, nd: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """sigmoid(2 c(t)) [b, L, S, H] with 2 c(t) = 2 c_bar + 2 (c - c_bar) e (NHP Eq. 7), and e = exp(-delta dt)
    (nd = -delta log2 e). tanh(c(t)) = 2 sigmoid(2 c(t)) - 1."""
    e = torch.exp2_(nd[:, :, None] * dt[..., None])
    return torch.sigmoid_(torch.addcmul(cb2[:, :, None], e, c2[:, :, None])), e


class _DecayedLogits(torch.autograd.Function):
    """``w_k^T h(t_i + dt)`` as [K, B, L, S] from the cell states [B, L, H] and dt [B, L, S].

    The [B, L, S, H] intermediates are the cost of NHP's loss (S = the integral points). Here they are made
    a few sequences at a time, so they stay in cache, and never stored: the backward pass recomputes them
    chunk by chunk and applies the chain rule by hand (checked against autograd in the tests), with plain
    matmuls over all points of a chunk. No gradient flows to dt (data)."""

    @staticmethod
    def forward(ctx, c: Tensor, cb: Tensor, d: Tensor, o: Tensor, w: Tensor, dt: Tensor) -> Tensor:
        (B, L, S), (K, H) = dt.shape, w.shape
        c2, cb2, nd = (c - cb).mul_(2), cb * 2, d * -_LOG2E
        ctx.save_for_backward(c2, cb2, nd, o, w, dt)
        out = dt.new_empty(K, B, L, S)
        for sl in _chunks(B, L, S, H):
            sg, _ = _decayed_sigmoid(c2[sl], cb2[sl], nd[sl], dt[sl])
            h = torch.addcmul(o[sl][:, :, None].neg(), sg, o[sl][:, :, None], value=2)  # o tanh c(t) = 2 o sg - o
            out[:, sl] = (w @ h.view(-1, H).t()).view(K, -1, L, S)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        c2, cb2, nd, o, w, dt = ctx.saved_tensors
        (B, L, S), (K, H) = dt.shape, w.shape
        g = g.contiguous()
        gc, gcb, gd, go = (torch.empty_like(o) for _ in range(4))
        gw = torch.zeros_like(w)
        for sl in _chunks(B, L, S, H):
            sg, e = _decayed_sigmoid(c2[sl], cb2[sl], nd[sl], dt[sl])
            osl, gk = o[sl][:, :, None], g[:, sl].reshape(K, -1)  # [b, L, 1, H], [K, n]
            th = sg.mul(2).sub_(1)  # tanh c(t)
            gw += gk @ (th * osl).view(-1, H)
            gh = (gk.t() @ w).view(sg.shape)  # d loss / d h(t)
            go[sl] = (gh * th).sum(2)
            gx = torch.ops.aten.sigmoid_backward(gh.mul_(osl).mul_(2), sg)  # d loss / d (2 c(t))
            s0 = gx.sum(2)
            s1 = gx.mul_(e).sum(2)
            s2 = gx.mul_(dt[sl][..., None]).sum(2)
            gc[sl] = s1 * 2
            gcb[sl] = (s0 - s1).mul_(2)
            gd[sl] = s2.mul_(c2[sl]).neg_()
        return gc, gcb, gd, go, gw, None


def _chunks(B: int, L: int, S: int, H: int, elements: int = 2**19) -> list[slice]:
    """Row slices of [B, ...] whose [rows, L, S, H] tensors hold about ``elements`` floats (2 MB)."""
    rows = max(1, elements // (L * S * H))
    return [slice(i, i + rows) for i in range(0, B, rows)]
