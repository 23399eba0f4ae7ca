"""ComiRec-DR: Controllable Multi-Interest Framework for Recommendation, dynamic-routing extractor
(Cen, Zhang, Zou, Zhou, Yang, Tang; KDD 2020, arXiv 2005.09347). Reference: THUDM/ComiRec (TF1),
``model.py`` (``CapsuleNetwork`` with bilinear_type=2, used by ``Model_ComiRec_DR``).

Behaviour capsules e_i become K interest capsules by dynamic routing:
    e_hat[j|i] = W_ij e_i        one d x d map per (position i, interest j), W ~ N(0, 1)
    b = 0                        [B, K, L], recomputed on every forward pass (serving too)
    3 times:  c = softmax_K(b), zero at padding;  s_j = sum_i c_ij e_hat[j|i];  v_j = squash(s_j)
              in iterations 1-2 only: b += e_hat . v, with e_hat detached (stop-gradient)
so W gets gradients through the last iteration only. Training reads out the interest closest to the
target and trains it with a sampled softmax over the tied item table (nn/sampled_softmax.py);
serving scores items by max_k e_i . v_k. The official README trains DR with lr 0.005 (configs/).

Deviations, one line each:
- Positions are slots from the oldest kept item (right padding), as the official fixed-width
  batches; a batch trimmed to its longest sequence uses W's first slots, so results do not change.
- The routing softmax is over the interest axis as in the official code and paper (some ports take it
  over the sequence axis, a bug the brief lists).
- The sampled-softmax proposal ranks items by training frequency instead of renumbering item ids.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.multi_interest import MultiInterestLoss, max_interest_scores, squash


class ComiRecDRConfig(StrictConfig):
    hidden_size: int = Field(64, gt=0)  # paper/code: d = 64
    num_interests: int = Field(4, gt=0)  # paper: K = 4
    max_len: int = Field(20, gt=0)  # code: 20 on Book, 50 on Taobao
    routing_iters: int = Field(3, gt=0)  # code: 3
    loss: Literal["sampled", "full"] = "sampled"  # code: tf.nn.sampled_softmax_loss
    neg_ratio: int = Field(10, gt=0)  # code: num_sampled = 10 * batch, shared by the batch
    proposal: Literal["log_uniform", "unigram", "uniform"] = "log_uniform"  # TF's default sampler
    max_sample_fraction: float = Field(0.5, gt=0, le=1)  # cap on shared negatives (small catalogues)


@register("comirec_dr")
class ComiRecDR(nn.Module):
    Config = ComiRecDRConfig
    padding = "right"  # slot 0 = oldest kept item, as the official batches
    fields: tuple[str, ...] = ()
    n_negatives = 0  # negatives are drawn in the loss (shared by the batch), not by the batcher
    train_windows = "random_target"  # official: each step, random users and a uniform target index

    def __init__(self, cfg: ComiRecDRConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        d, k = cfg.hidden_size, cfg.num_interests
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # input and output table (tied)
        nn.init.xavier_uniform_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        # W[i, j] maps behaviour i into interest j's space: [L, K, d_out, d_in], N(0, 1) as the code.
        self.W = nn.Parameter(torch.randn(cfg.max_len, k, d, d))
        self.criterion = MultiInterestLoss(n_items, cfg.loss, cfg.neg_ratio, cfg.proposal, cfg.max_sample_fraction)

    def use_item_counts(self, counts) -> None:
        """Training item counts for the sampled-softmax proposal (called before training)."""
        self.criterion.use_item_counts(counts)

    def routing(self, item: Tensor) -> tuple[Tensor, Tensor]:
        """item [B, L] (right-padded) -> (interest capsules v [B, K, d], last couplings c [B, K, L])."""
        L = item.shape[1]
        if L > self.cfg.max_len:
            raise ValueError(f"sequence width {L} exceeds max_len {self.cfg.max_len}")
        valid = item > 0  # [B, L]
        e = self.item_emb(item) * valid.unsqueeze(-1)  # [B, L, d], padding rows zero
        e_hat = torch.einsum("lkhd,bld->bklh", self.W[:L], e)  # [B, K, L, d] prediction vectors
        e_hat_sg = e_hat.detach()
        b = torch.zeros(e_hat.shape[:3], dtype=e_hat.dtype, device=e_hat.device)  # [B, K, L] from zero
        mask = valid.unsqueeze(1)  # [B, 1, L]
        n_it = self.cfg.routing_iters
        for it in range(n_it):
            c = torch.softmax(b, dim=1) * mask  # over interests; padded positions get 0
            if it < n_it - 1:
                v = squash(torch.einsum("bkl,bklh->bkh", c, e_hat_sg))  # [B, K, d]
                b = b + torch.einsum("bklh,bkh->bkl", e_hat_sg, v)
            else:
                v = squash(torch.einsum("bkl,bklh->bkh", c, e_hat))  # the only pass with gradients to W
        return v, c

    def interests(self, batch: dict[str, Tensor]) -> Tensor:
        """The K interest vectors [B, K, d] (what serving puts through the item index)."""
        return self.routing(batch["item"])[0]

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        # hard readout (the interest closest to the target), then the sampled or full softmax
        return self.criterion(self.interests(batch), batch["target"], self.item_emb.weight)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        return max_interest_scores(self.interests(batch), self.item_emb.weight)  # [B, n_items + 1]
