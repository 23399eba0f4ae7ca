"""THP: Transformer Hawkes Process (Zuo, Jiang, Li, Zhao & Zha, ICML 2020).

Event j is embedded as ``U k_j + z(t_j)`` with the sinusoidal temporal encoding z (Eq. 2); causal
multi-head self-attention blocks give h(t_j) from events 1..j; on (t_j, t_{j+1}]

    lambda_k(t) = softplus_{beta_k}(alpha_k (t - t_j) + w_k^T h(t_j) + b_k)                    (Eq. 6)

Deviations, one line each:
- The current-influence term is alpha_k (t - t_j), not alpha_k (t - t_j) / t_j: dividing by t_j makes
  the intensity depend on the time origin and is undefined at t_j = 0 (EasyTPP's THP drops it too).
- z(t) is added before every block, as the official code and EasyTPP do (the paper adds it once).
- Times are measured from each sequence's first event (the task's batches), so z(t) does not depend
  on where a window of the stream starts.
- Blocks are post-LayerNorm (residual, then LayerNorm) after attention and after the FFN; defaults follow
  EasyTPP's example config (hidden 32, 2 layers, 2 heads); the paper tunes sizes per data set.
- Optional, off by default (``baseline=True``, not in the paper): lambda_k(t) = Eq. 6 + mu_k with a learnable
  mu_k = softplus(m_k) >= 0, so the intensity decays to a positive floor, as a Hawkes process's does.
- Optional, off by default (``blocks="easytpp"``, not in the paper): EasyTPP 0.3.0's layer layout, for comparisons
  with EasyTPP's THP on equal work per step: no residuals or LayerNorm, no attention output projection, and one
  ReLU FFN (width ``inner_size``; EasyTPP's is 2 x hidden) shared by all layers. Still ours: times from each
  sequence's first event, the initialisation, beta * softplus(x / beta) (EasyTPP's beta is its inverse), the
  integral points, and no extra per-type bias (EasyTPP's repeats the head's).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.time_encoding import SinusoidalTimeEncoding
from behaviorseq.nn.tpp import check_batch, nll_per_event
from behaviorseq.nn.transformer import MultiHeadAttention, PointWiseFFN, attention_mask


class THPConfig(StrictConfig):
    hidden_size: int = Field(32, gt=0)  # d_model; the temporal encoding has the same size
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(2, gt=0)
    inner_size: int = Field(64, gt=0)  # FFN width
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # the paper's default
    integral: Literal["mc", "midpoint"] = "mc"  # paper Sec. 4.1: Monte Carlo integration
    integral_samples: int = Field(20, gt=0)
    baseline: bool = False  # add a per-type floor mu_k >= 0 to Eq. 6 (a deviation from the paper; see above)
    blocks: Literal["paper", "easytpp"] = "paper"  # "easytpp": EasyTPP's layer layout (see above)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> THPConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


@register("thp")
class THP(nn.Module):
    Config = THPConfig
    padding = "right"
    fields = ("time", "dtime", "type", "mask")

    def __init__(self, cfg: THPConfig, num_types: int):
        super().__init__()
        self.cfg, self.num_types = cfg, num_types
        d = cfg.hidden_size
        self.type_emb = nn.Embedding(num_types + 1, d, padding_idx=num_types)  # U; row K = padding
        self.time_enc = SinusoidalTimeEncoding(d)
        paper = cfg.blocks == "paper"
        self.attns = nn.ModuleList(MultiHeadAttention(d, cfg.num_heads, cfg.dropout, output_projection=paper)
                                   for _ in range(cfg.num_layers))
        if paper:
            self.attn_drop = Dropout(cfg.dropout)
            self.attn_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.num_layers))
            self.ffns = nn.ModuleList(PointWiseFFN(d, cfg.inner_size, "gelu", cfg.dropout, cfg.dropout)
                                      for _ in range(cfg.num_layers))
            self.ffn_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.num_layers))
        else:  # EasyTPP: x <- FFN(Attn(x + z)) in every layer, with the one FFN
            self.shared_ffn = nn.Sequential(nn.Linear(d, cfg.inner_size), nn.ReLU(), nn.Linear(cfg.inner_size, d))
        self.head = nn.Linear(d, num_types)  # w_k, b_k
        self.alpha = nn.Parameter(torch.full((num_types,), -0.1))  # current influence alpha_k
        self.log_beta = nn.Parameter(torch.zeros(num_types))  # softness beta_k = exp(log_beta_k), init 1
        if cfg.baseline:  # mu_k = softplus(m_k), init about 0.05
            self.baseline_raw = nn.Parameter(torch.full((num_types,), -3.0))

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        check_batch(batch, self.fields)
        mask = batch["mask"]
        z = self.time_enc(batch["time"]) * mask[..., None]  # [B, L, d]
        x = self.type_emb(batch["type"])  # [B, L, d]
        allowed = attention_mask(mask, causal=True)  # [B, 1, L, L]: event j sees events <= j
        if self.cfg.blocks == "easytpp":
            for attn in self.attns:
                x = x + z
                x = self.shared_ffn(attn(x, x, x, allowed))
            return {"base": self.head(x), "mask": mask}
        for attn, n1, ffn, n2 in zip(self.attns, self.attn_norms, self.ffns, self.ffn_norms):
            x = x + z
            x = n1(x + self.attn_drop(attn(x, x, x, allowed)))
            x = n2(x + ffn(x))
        return {"base": self.head(x), "mask": mask}  # w_k^T h(t_j) + b_k, [B, L, K]

    def intensity(self, state: dict[str, Tensor], dt: Tensor) -> Tensor:
        """dt [B, L, S] -> lambda [B, L, S, K] (Eq. 6)."""
        # Computed as [B, L, K, S] (S innermost: fast elementwise loops) and returned as a [B, L, S, K] view;
        # softplus_beta(x) = beta softplus(x / beta), the 1 / beta folded into the small factors.
        beta = self.log_beta.exp()  # [K]
        x = torch.addcmul((state["base"] / beta)[..., None], (self.alpha / beta)[:, None], dt[:, :, None, :])
        lam = nn.functional.softplus(x) * beta[:, None]  # [B, L, K, S]
        if self.cfg.baseline:
            lam = lam + nn.functional.softplus(self.baseline_raw)[:, None]
        return lam.transpose(-1, -2)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nll_per_event(self, batch, self.cfg.integral_samples, self.cfg.integral)
