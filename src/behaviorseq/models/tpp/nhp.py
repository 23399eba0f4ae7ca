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
        c = c_bar = delta = o = emb.new_zeros(B, H)
        out_c, out_cb, out_d, out_o = [], [], [], []
        for i in range(L):
            # decay the previous interval's cell to t_i; zero states before the first event
            c_t = c_bar + (c - c_bar) * torch.exp(-delta * dtime[:, i, None])
            h_t = o * torch.tanh(c_t)
            g = self.gates(torch.cat([emb[:, i], h_t], -1))
            gi, gf, gz, go, gib, gfb, gd = g.chunk(7, -1)
            gi, gf, go, gib, gfb = (torch.sigmoid(x) for x in (gi, gf, go, gib, gfb))
            z = torch.tanh(gz)
            c = gf * c_t + gi * z
            c_bar = gfb * c_bar + gib * z
            delta, o = nn.functional.softplus(gd), go
            out_c.append(c), out_cb.append(c_bar), out_d.append(delta), out_o.append(o)
        return {"c": torch.stack(out_c, 1), "c_bar": torch.stack(out_cb, 1), "delta": torch.stack(out_d, 1),
                "o": torch.stack(out_o, 1), "mask": mask}  # each [B, L, H]

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> lambda [B, L, S, K] on the interval after each event."""
        c, cb = state["c"][:, :, None], state["c_bar"][:, :, None]  # [B, L, 1, H]
        c_t = cb + (c - cb) * torch.exp(-state["delta"][:, :, None] * dt[..., None])  # [B, L, S, H]
        h = state["o"][:, :, None] * torch.tanh(c_t)
        return scaled_softplus(self.w(h), self.log_s.exp())

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)
