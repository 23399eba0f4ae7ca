"""Multivariate Hawkes process with exponential kernels (Hawkes 1971) as a TPP model.

    lambda_k(t) = mu_k + sum_{t_m < t} a[k, k_m] * b[k, k_m] * exp(-b[k, k_m] * (t - t_m))

the parameterisation of ``tick`` and ``behaviorseq.data.synthetic.hawkes`` (``a`` is the branching
matrix). Learnable (mu, a, b through softplus) as the parametric baseline, or fixed by ``from_params``
as the true model of simulated data: its log-likelihood with ``integral="exact"`` is the closed form,
and thinning with it gives the Bayes predictions that the neural models are measured against.

Deviation: the decayed counts are computed pairwise ([B, L, L, K, K], vectorised) rather than by the
O(L) recursion of the simulator; both give the same numbers, the pairwise one has no Python loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.tpp import check_batch, nll_per_event


class HawkesExpConfig(StrictConfig):
    init_mu: float = Field(0.2, gt=0)  # initial baselines (learnable model)
    init_adjacency: float = Field(0.1, gt=0)  # initial branching entries
    init_decay: float = Field(1.0, gt=0)
    integral: Literal["exact", "mc", "midpoint"] = "exact"  # closed-form compensator by default
    integral_samples: int = Field(20, gt=0)  # for "mc" / "midpoint"


def _inv_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


@register("hawkes_exp")
class HawkesExp(nn.Module):
    Config = HawkesExpConfig
    padding = "right"
    fields = ("time", "dtime", "type", "mask")

    def __init__(self, cfg: HawkesExpConfig, num_types: int):
        super().__init__()
        self.cfg, self.num_types = cfg, num_types
        K = num_types
        self.raw_mu = nn.Parameter(_inv_softplus(torch.full((K,), cfg.init_mu)))
        self.raw_adjacency = nn.Parameter(_inv_softplus(torch.full((K, K), cfg.init_adjacency)))
        self.raw_decay = nn.Parameter(_inv_softplus(torch.full((K, K), cfg.init_decay)))
        self.fixed = False

    @classmethod
    def from_params(cls, mu, adjacency, decay, **config) -> HawkesExp:
        """A model with the given parameters, held fixed (buffers, not trained)."""
        mu = torch.as_tensor(np.asarray(mu), dtype=torch.float32)
        K = len(mu)
        model = cls(cls.Config.from_dict(config), K)
        del model.raw_mu, model.raw_adjacency, model.raw_decay
        model.register_buffer("mu_fixed", mu)
        model.register_buffer("adjacency_fixed", torch.as_tensor(np.asarray(adjacency), dtype=torch.float32).reshape(K, K))
        model.register_buffer("decay_fixed", torch.as_tensor(np.broadcast_to(decay, (K, K)).copy(), dtype=torch.float32))
        model.fixed = True
        return model

    def params(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.fixed:
            return self.mu_fixed, self.adjacency_fixed, self.decay_fixed
        return F.softplus(self.raw_mu), F.softplus(self.raw_adjacency), F.softplus(self.raw_decay)

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Decayed counts just after each event: S[b, i, k, j] = sum_{m <= i, k_m = j} exp(-b[k, j] (t_i - t_m))."""
        check_batch(batch, self.fields)
        t, mask = batch["time"].float(), batch["mask"]
        _, _, decay = self.params()
        L = t.shape[1]
        lag = t[:, :, None] - t[:, None, :]  # [B, L(i), L(m)]
        seen = torch.ones(L, L, dtype=torch.bool, device=t.device).tril() & mask[:, None, :]  # m <= i, m real
        onehot = F.one_hot(batch["type"].clamp(max=self.num_types - 1), self.num_types).float()
        onehot = onehot * mask[..., None]  # [B, L, K]
        w = torch.exp(-decay * lag.clamp_min(0)[..., None, None])  # [B, L, L, K, K]
        w = w * seen[..., None, None]
        counts = torch.einsum("bimkj,bmj->bikj", w, onehot)  # [B, L, K, K]
        return {"counts": counts, "mask": mask}

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> [B, L, S, K]."""
        mu, a, b = self.params()
        decayed = state["counts"][:, :, None] * torch.exp(-b * dt[..., None, None])  # [B, L, S, K, K]
        return mu + (a * b * decayed).sum(-1)

    def compensator(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """Lambda_k(t_i, t_i + dt), closed form; dt [B, L, S] -> [B, L, S, K]."""
        mu, a, b = self.params()
        grown = state["counts"][:, :, None] * (-torch.expm1(-b * dt[..., None, None]))
        return mu * dt[..., None] + (a * grown).sum(-1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)
