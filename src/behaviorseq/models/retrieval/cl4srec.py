"""CL4SRec: Contrastive Learning for Sequential Recommendation (Xie et al., ICDE 2022, arXiv 2010.14395).

SASRec trained with an auxiliary contrastive task:

    L = L_main + lambda * L_cl

Each input sequence gets two views, each from one augmentation drawn from {crop, mask, reorder} (the
two distinct, as the widely used RecBole/DuoRec re-implementation draws them):
- crop: a random contiguous run of floor(eta * n) items;
- mask: floor(gamma * n) random items replaced by a [mask] token;
- reorder: a random contiguous run of floor(beta * n) items shuffled.
L_cl is NT-Xent (dot product, temperature tau) over the 2B view representations (the state after each
view's latest item), the other 2B - 2 views being the negatives. Sequences of one item are
left as they are. L_main is SASRec's loss (full softmax by default); inference is plain SASRec.

Deviations, one line each:
- There is no official code; rates, tau and lambda follow RuihongQiu/DuoRec's ``cl4srec.py``
  (eta 0.6, gamma 0.3, beta 0.6, tau 1, lambda 0.1), the re-implementation later papers report.
- Augmentations are drawn on the device for the whole batch at once (DuoRec draws them per sequence in
  Python), from the global torch RNG so the run's seed fixes them.
- The encoder is our SASRec (models/retrieval/sasrec.py), with one extra embedding row for [mask] that
  is never scored.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from behaviorseq.models import register
from behaviorseq.models.retrieval.sasrec import SASRec, SASRecConfig
from behaviorseq.nn.contrastive import nt_xent
from behaviorseq.nn.length_groups import encode_by_length
from behaviorseq.nn.losses import next_item_loss


class CL4SRecConfig(SASRecConfig):
    hidden_size: int = Field(64, gt=0)  # paper: d = 64
    num_heads: int = Field(2, gt=0)  # paper: 2 heads, 2 layers
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # DuoRec config: hidden and attention dropout 0.5
    loss: Literal["bce", "ce"] = "ce"  # DuoRec: CE (full softmax); "bce": SASRec's one-negative loss
    crop_ratio: float = Field(0.6, gt=0.0, le=1.0)  # eta
    mask_ratio: float = Field(0.3, ge=0.0, lt=1.0)  # gamma
    reorder_ratio: float = Field(0.6, ge=0.0, le=1.0)  # beta
    cl_weight: float = Field(0.1, ge=0.0)  # lambda
    tau: float = Field(1.0, gt=0.0)  # NT-Xent temperature


@register("cl4srec")
class CL4SRec(SASRec):
    Config = CL4SRecConfig
    padding = "left"
    fields: tuple[str, ...] = ()
    train_windows = "prefixes"  # RecBole/DuoRec: one sample per training prefix
    cpu_buckets = 3  # length groups for a prefix batch and its views on a CPU (nn/length_groups.py)

    def __init__(self, cfg: CL4SRecConfig, n_items: int):
        super().__init__(cfg, n_items + 1)  # row n_items + 1 is the [mask] token
        self.n_items, self.mask_token = n_items, n_items + 1

    @property
    def item_table(self) -> Tensor:
        return self.item_emb.weight[: self.n_items + 1]  # [n_items + 1, d], without [mask]

    # ---- augmentations on left-padded [B, L] ------------------------------------------------------
    @staticmethod
    def crop(item: Tensor, ratio: float) -> Tensor:
        """Crop: keep floor(ratio * n) consecutive items from a uniform start, left-padded again."""
        B, L = item.shape
        n = (item > 0).sum(1, keepdim=True)  # [B, 1]
        keep = (n * ratio).floor().long().clamp(min=1)
        start = (torch.rand(B, 1, device=item.device) * (n - keep + 1)).floor().long()  # in 0..n-keep
        col = torch.arange(L, device=item.device)
        src = col + (start + keep - n)  # column of the source item (item j of the run sits at L - keep + j)
        return torch.where(col >= L - keep, item.gather(1, src.clamp(0, L - 1)), 0)

    def mask(self, item: Tensor, ratio: float) -> Tensor:
        """Mask: floor(ratio * n) distinct real items, uniformly chosen, become [mask]."""
        n = (item > 0).sum(1, keepdim=True)
        r = torch.rand(item.shape, device=item.device).masked_fill(item == 0, 2.0)  # padding sorts last
        rank = r.argsort(1).argsort(1)  # rank of each position among the row's draws
        return torch.where(rank < (n * ratio).floor().long(), self.mask_token, item)

    @staticmethod
    def reorder(item: Tensor, ratio: float) -> Tensor:
        """Reorder: a run of floor(ratio * n) consecutive items from a uniform start, shuffled."""
        B, L = item.shape
        n = (item > 0).sum(1, keepdim=True)
        m = (n * ratio).floor().long()
        lo = (L - n) + (torch.rand(B, 1, device=item.device) * (n - m + 1)).floor().long()  # first column
        col = torch.arange(L, device=item.device).expand(B, L)
        inside = (col >= lo) & (col < lo + m)
        # Sort keys: outside positions keep their column; inside ones get random keys within [lo, lo + m - 1],
        # so they permute among themselves only (uniformly: the keys are i.i.d.).
        key = torch.where(inside, lo + torch.rand(B, L, device=item.device) * (m - 1).clamp(min=0), col.float())
        return item.gather(1, key.argsort(dim=1, stable=True))

    def augment(self, item: Tensor) -> tuple[Tensor, Tensor]:
        """Two views [B, L], each from one of the three augmentations (two distinct ones per sequence)."""
        c = self.cfg
        options = torch.stack([self.crop(item, c.crop_ratio), self.mask(item, c.mask_ratio),
                               self.reorder(item, c.reorder_ratio)])  # [3, B, L]
        B = item.shape[0]
        first = torch.randint(0, 3, (B,), device=item.device)
        second = (first + torch.randint(1, 3, (B,), device=item.device)) % 3
        rows = torch.arange(B, device=item.device)
        short = ((item > 0).sum(1) <= 1)[:, None]  # one item: no augmentation (DuoRec)
        v1 = torch.where(short, item, options[first, rows])
        v2 = torch.where(short, item, options[second, rows])
        return v1, v2

    # ---- losses -------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        item, target = batch["item"], batch["target"]
        neg = batch.get("negative")
        if target.dim() == 1 and self.cfg.cl_weight > 0:  # prefixes: the sample and its two views, by length
            v1, v2 = self.augment(item)
            h, z1, z2 = encode_by_length(self.encode_last, [item, v1, v2], self.cpu_buckets)
            loss = next_item_loss(h[:, None], target[:, None], self.item_table, self.cfg.loss,
                                  neg[:, :1] if neg is not None else None)  # L_main
            return loss + self.cfg.cl_weight * nt_xent(z1, z2, self.cfg.tau)
        if target.dim() == 1:  # single-target samples (prefixes, cl_weight 0): the latest position predicts it
            h_main, target = self.encode_last(item)[:, None], target[:, None]
            neg = neg[:, :1] if neg is not None else None
        else:  # shifted samples: every position predicts its next item
            h_main = self.encode(item)  # [B, L, d]
        loss = next_item_loss(h_main, target, self.item_table, self.cfg.loss, neg)  # L_main
        if self.cfg.cl_weight == 0:
            return loss
        v1, v2 = self.augment(item)
        z1, z2 = self.encode_last(torch.cat([v1, v2])).chunk(2)  # [B, d] each
        return loss + self.cfg.cl_weight * nt_xent(z1, z2, self.cfg.tau)

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encode_last(batch["item"])  # [B, d]
        return h @ self.item_table.T  # [B, n_items + 1]
