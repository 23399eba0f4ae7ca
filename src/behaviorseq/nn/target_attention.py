"""Target attention over a behaviour sequence: full softmax, top-K search then re-softmax (TWIN / DARE),
and DIN's MLP activation unit, each with a padding mask.

Shapes: B = batch, L = sequence length (left-padded, latest behaviour last), D = value dim, K = top-K.
``mask`` is bool [B, L], True on real behaviours. A row without real behaviours attends to nothing
(zero output), never to padding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from behaviorseq.nn.topk import topk_rows

# DARE's official padding fill (-2^32 + 1): finite, so an all-padding row gives no NaN.
PAD_SCORE = -(2.0**32) + 1.0


def recency_positions(width: int, device: torch.device | None = None) -> Tensor:
    """Position ids [width] of a left-padded row: the latest column gets 1, the oldest ``width``.

    DARE's ``max_len - index``; the target uses id 0. The ids depend only on the distance to the latest
    behaviour, so trimming a batch to its longest history does not change them."""
    return torch.arange(width, 0, -1, device=device)


def esu_scores(v: Tensor, e: Tensor, d: int, use_position: bool, kind: str = "twin") -> Tensor:
    """Target-attention scores of the behaviours e [B, L, F] for the target v [B, F], F = [item; cat(; pos)]
    fields of width d -> [B, L]. ``"twin"`` (TWIN / DARE, brief 1.1): the semantic part over sqrt(2d) plus the
    position part over sqrt(d); ``"plain"``: one scaled dot product over all F, <v, e_j> / sqrt(F)."""
    if kind == "plain":
        return torch.bmm(e, v.unsqueeze(-1)).squeeze(-1) / math.sqrt(e.shape[-1])
    if kind != "twin":
        raise ValueError(f"esu kind must be 'twin' or 'plain', got {kind!r}")
    sem = torch.bmm(e[..., :2 * d], v[:, :2 * d].unsqueeze(-1)).squeeze(-1) / math.sqrt(2 * d)
    if not use_position:
        return sem
    return sem + torch.bmm(e[..., 2 * d:], v[:, 2 * d:].unsqueeze(-1)).squeeze(-1) / math.sqrt(d)


def pad_score(dtype: torch.dtype) -> float:
    """PAD_SCORE, or the dtype's lowest finite value where PAD_SCORE does not fit (float16 under AMP)."""
    return max(PAD_SCORE, torch.finfo(dtype).min)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """softmax over the last dim with padding excluded; all-padding rows give zeros. [..., L]."""
    return torch.softmax(scores.masked_fill(~mask, pad_score(scores.dtype)), dim=-1) * mask


def softmax_attention(scores: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Full target attention: h = sum_j softmax(s)_j v_j over real behaviours.

    Args: scores [B, L], values [B, L, D], mask [B, L] bool.
    Returns: (h [B, D], weights [B, L])."""
    w = masked_softmax(scores, mask)
    return torch.bmm(w.unsqueeze(1), values).squeeze(1), w


def topk_search(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, min(k, L)] of the K highest-scoring behaviours; padding is ranked below every real
    behaviour, so it is chosen only when a row has fewer than K. Non-differentiable (as in TWIN / DARE)."""
    k = min(int(k), scores.shape[-1])
    return scores.detach().masked_fill(~mask, pad_score(scores.dtype)).topk(k, dim=-1).indices


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, L, *rest] at positions idx [B, K] -> [B, K, *rest] (one gather, no loop over the batch)."""
    view = idx.reshape(idx.shape + (1,) * (x.dim() - 2))
    return x.gather(1, view.expand(idx.shape + x.shape[2:]))


def topk_attention(scores: Tensor, values: Tensor | None, mask: Tensor, k: int,
                   idx: Tensor | None = None) -> tuple[Tensor | None, Tensor, Tensor]:
    """Soft search (DARE / TWIN): h = sum_{j in topK(s)} softmax_{topK}(s)_j v_j.

    The official DARE code re-masks the scores to the top K and applies softmax over all L; gathering
    the K scores and their values first is the same function and costs O(B K D) instead of O(B L D).

    Args:
        scores [B, L]; values [B, L, D] or None (return no h, e.g. when the caller embeds the K chosen
        ids itself); mask [B, L] bool; k; idx: precomputed :func:`topk_search` indices.
    Returns: (h [B, D] or None, weights [B, K], idx [B, K])."""
    if idx is None:
        idx = topk_search(scores, mask, k)
    w = masked_softmax(scores.gather(1, idx), mask.gather(1, idx))
    h = None if values is None else torch.bmm(w.unsqueeze(1), gather_rows(values, idx)).squeeze(1)
    return h, w, idx


def real_suffix(item: Tensor, *fields: Tensor, max_len: int | None = None) -> tuple[Tensor, ...]:
    """The real behaviours of one left-padded history ``item`` [L] and the same columns of its other
    fields: serving scores only these, so it needs no padding mask. ``ValueError`` if padding (id 0)
    follows a real behaviour, or if there are more than ``max_len`` (the model's position table)."""
    n = int((item > 0).sum())
    if max_len is not None and n > max_len:
        raise ValueError(f"history holds {n} behaviours; the model was built for max_len = {max_len}: pass the "
                         f"latest {max_len}, as training does")
    start = item.shape[0] - n
    if n and not bool((item[start:] > 0).all()):
        raise ValueError("history is not left-padded: item id 0 (padding) follows a real behaviour")
    return (item[start:],) + tuple(f[start:] for f in fields)


def candidate_topk_attention(scores: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Serving form of :func:`topk_attention` for one user's history (real behaviours only, see
    :func:`real_suffix`) shared by C candidates: the values are embedded once ([L, D], not [C, L, D])
    and only the K chosen rows per candidate are read.

    Args: scores [C, L]; values [L, D]; k.
    Returns: (h [C, D], weights [C, K'], idx [C, K']) with K' = min(k, L)."""
    top, idx = topk_rows(scores, k)  # torch.topk's values; a threshold scan on CPU (nn.topk)
    w = torch.softmax(top, dim=-1)
    return torch.bmm(w.unsqueeze(1), values[idx]).squeeze(1), w, idx


class DINActivationUnit(nn.Module):
    """DIN's activation unit (Zhou et al., KDD 2018, Fig. 2): a(q, k_j) = w2^T PReLU(W1 [q, k, q - k, q * k] + b1) + b2.

    ``forward`` never builds the [B, L, 4D] input: W1 [q, k, q - k, q * k] = (Wq + Wd) q + (Wk - Wd + diag(q) Wp) k,
    so the per-row matrix (Wk - Wd + diag(q) Wp) [B, D, H] multiplies the keys in one bmm (memory B L H, not
    B L 4D). :meth:`reference` is the plain concatenation, kept for the parity test."""

    def __init__(self, dim: int, hidden: int = 36):
        super().__init__()
        self.dim = dim
        self.hidden = nn.Linear(4 * dim, hidden)
        self.act = nn.PReLU()
        self.out = nn.Linear(hidden, 1)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """query [B, D], keys [B, L, D] -> scores [B, L]."""
        wq, wk, wd, wp = self.hidden.weight.split(self.dim, dim=1)  # each [H, D]
        bias = query @ (wq + wd).T + self.hidden.bias  # [B, H]
        per_row = (wk - wd).T.unsqueeze(0) + query.unsqueeze(2) * wp.T.unsqueeze(0)  # [B, D, H]
        hid = torch.baddbmm(bias.unsqueeze(1), keys, per_row)  # [B, L, H]
        return self.out(self.act(hid)).squeeze(-1)

    def reference(self, query: Tensor, keys: Tensor) -> Tensor:
        q = query.unsqueeze(1).expand_as(keys)
        x = torch.cat([q, keys, q - keys, q * keys], dim=-1)
        return self.out(self.act(self.hidden(x))).squeeze(-1)
