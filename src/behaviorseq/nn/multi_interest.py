"""What multi-interest retrieval models share: capsule squash, the hard readout used in training, the
max-over-interests score used in serving, and the training loss (sampled softmax with shared negatives,
or the full softmax). Used by ComiRec-SA and ComiRec-DR (Cen et al., KDD 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from behaviorseq.nn.losses import linear_cross_entropy
from behaviorseq.nn.sampled_softmax import proposal_probs, sampled_softmax_loss


def squash(s: Tensor, eps: float = 1e-9) -> Tensor:
    """Capsule squash along the last axis: |s|^2 / (1 + |s|^2) * s / |s|, with the official eps."""
    n2 = (s * s).sum(-1, keepdim=True)
    return n2 / (1 + n2) / torch.sqrt(n2 + eps) * s


def hard_readout(interests: Tensor, target_emb: Tensor) -> Tensor:
    """interests [B, K, d], target_emb [B, d] -> [B, d]: the interest with the largest inner product
    with the target (ComiRec's training readout; argmax, so no gradient through the choice)."""
    k = torch.einsum("bkd,bd->bk", interests, target_emb).argmax(1)  # [B]
    return interests[torch.arange(len(k), device=k.device), k]


def max_interest_scores(interests: Tensor, table: Tensor) -> Tensor:
    """[B, K, d] x [n_items + 1, d] -> [B, n_items + 1]: f(u, i) = max_k e_i . v_k, the score that
    pooling each interest's top-N (ComiRec's serving) ranks by."""
    return torch.einsum("bkd,nd->bkn", interests, table).amax(1)


class MultiInterestLoss(nn.Module):
    """Training loss of a user vector against the target item over a tied item table.

    ``kind="sampled"``: ``neg_ratio * B`` candidates shared by the batch (the official ComiRec's
    num_sampled = 10 x batch), capped at ``max_sample_fraction`` of the items Q can draw (a unique sampler
    cannot draw nearly all items), from the ``proposal`` over training frequencies, logQ-corrected with
    accidental hits removed. ``kind="full"``: softmax cross-entropy over all items.
    """

    def __init__(self, n_items: int, kind: str = "sampled", neg_ratio: int = 10, proposal: str = "log_uniform",
                 max_sample_fraction: float = 0.5):
        super().__init__()
        if kind not in ("sampled", "full"):
            raise ValueError(f"loss must be 'sampled' or 'full', got {kind!r}")
        self.kind, self.neg_ratio, self.proposal = kind, neg_ratio, proposal
        self.max_sample_fraction = max_sample_fraction
        # Training counts per item id; set by use_item_counts() before training (saved with the model).
        self.register_buffer("counts", torch.zeros(n_items + 1, dtype=torch.float64))
        self._q: Tensor | None = None
        self._max_sampled = 1  # set with _q: max_sample_fraction of the items Q can draw

    def use_item_counts(self, counts: Tensor) -> None:
        self.counts.copy_(torch.as_tensor(counts, dtype=torch.float64))
        self._q = None

    def forward(self, interests: Tensor, target: Tensor, table: Tensor) -> Tensor:
        """interests [B, K, d] of single-target samples, target [B]: the hard readout's loss."""
        if target.dim() != 1:
            raise ValueError("multi-interest models train on single-target samples (train.train_windows="
                             f"random_target or prefixes); got targets of shape {tuple(target.shape)}")
        user = hard_readout(interests, table[target])  # [B, d]
        if self.kind == "full":
            return linear_cross_entropy(user, table[1:], target - 1)
        if self._q is None:
            if self.proposal != "uniform" and self.counts.sum() <= 0:
                raise RuntimeError("sampled softmax needs the training item counts: call "
                                   "model.use_item_counts(counts) (run_experiment does) or use loss='full'")
            self._q = proposal_probs(self.counts.cpu(), self.proposal)
            # the cap applies to the items the proposal can draw: with "unigram", items never seen in training
            # (e.g. only by held-out users) have Q = 0
            self._max_sampled = max(1, int(self.max_sample_fraction * int((self._q > 0).sum())))
        num = min(self.neg_ratio * len(target), self._max_sampled)
        return sampled_softmax_loss(user, target, table, self._q, num)
