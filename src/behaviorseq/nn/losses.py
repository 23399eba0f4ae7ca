"""Next-item training losses shared by the sequential retrieval models (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FUSED_CE = True  # False: torch's cross_entropy everywhere (benchmarks/train_step_speed.py compares the two)


def next_item_loss(h: Tensor, target: Tensor, item_table: Tensor, kind: str, negative: Tensor | None = None) -> Tensor:
    """Loss of hidden states ``h`` [B, L, d] predicting ``target`` [B, L] (0 = padding, ignored).

    ``kind="bce"``: SASRec's binary cross-entropy of the target against one sampled ``negative`` [B, L],
    averaged over real positions. ``kind="ce"``: softmax cross-entropy over all items of ``item_table``
    [n_items + 1, d] (row 0, the padding item, is never a class).
    """
    valid = target > 0  # [B, L]
    if kind == "bce":
        if negative is None:
            raise KeyError("the bce loss needs batch['negative'] (one sampled negative per position)")
        pos = (h * item_table[target]).sum(-1)[valid]  # [N]
        neg = (h * item_table[negative]).sum(-1)[valid]  # [N]
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))
    if kind != "ce":
        raise ValueError(f"loss must be 'bce' or 'ce', got {kind!r}")
    return linear_cross_entropy(h[valid], item_table[1:], target[valid] - 1)  # over items 1..n_items


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_n CE(softmax(h_n W^T + b), y_n) with the backward written out (softmax - onehot, in place on
    the saved logits) and the [N, C] passes done in row blocks that stay in cache. Autograd's path
    (log_softmax, then nll) keeps a second [N, C] tensor, zero-fills a third for nll's gradient and
    makes three more passes over them. On CPU, one thread, [1,800 x 12,101]: 170 ms against torch's 270
    with glibc's default allocator, level with torch under the tuned one (train/allocator.py);
    whole training steps: benchmarks/train_step_speed.py."""

    BLOCK = 128  # rows per block: 128 x 12,101 floats = 6 MB on Beauty

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor | None, target: Tensor) -> Tensor:
        logits = h @ w.T if b is None else torch.addmm(b, h, w.T)  # [N, C]
        lse = torch.cat([torch.logsumexp(blk, 1) for blk in logits.split(_LinearCrossEntropy.BLOCK)])  # [N]
        loss = (lse - logits.gather(1, target[:, None]).squeeze(1)).mean()
        ctx.save_for_backward(h, w, logits, lse, target)
        ctx.has_bias, ctx.spent = b is not None, False
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.spent:  # the saved logits were overwritten by the first backward
            raise RuntimeError("linear_cross_entropy supports one backward pass (no retain_graph reuse)")
        ctx.spent = True
        h, w, logits, lse, target = ctx.saved_tensors
        gh, gw = torch.empty_like(h), torch.zeros_like(w)
        gb = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if ctx.has_bias else None
        n = _LinearCrossEntropy.BLOCK
        for s in range(0, len(target), n):
            p = logits[s : s + n].sub_(lse[s : s + n, None]).exp_()  # softmax rows, in place
            p[torch.arange(len(p), device=p.device), target[s : s + n]] -= 1
            torch.mm(p, w, out=gh[s : s + n])
            gw.addmm_(p.T, h[s : s + n])
            if gb is not None:
                gb += p.sum(0)
        scale = grad / len(target)  # the mean's 1/N, applied to the small products
        return (gh.mul_(scale) if ctx.needs_input_grad[0] else None, gw.mul_(scale) if ctx.needs_input_grad[1] else None,
                gb.mul_(scale) if gb is not None and ctx.needs_input_grad[2] else None, None)


def linear_cross_entropy(h: Tensor, w: Tensor, target: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.cross_entropy(h @ w.T + bias, target)`` (mean over rows), h [N, d], w [C, d], target [N] in 0..C-1.

    On CPU outside autocast the fused :class:`_LinearCrossEntropy` (one backward pass only); elsewhere
    (CUDA, AMP) torch's own ops. Both give the same loss and gradients to float rounding (a test)."""
    if not FUSED_CE or h.device.type != "cpu" or torch.is_autocast_enabled("cpu") or not len(target):
        logits = h @ w.T if bias is None else torch.addmm(bias, h, w.T)
        return F.cross_entropy(logits, target)
    return _LinearCrossEntropy.apply(h, w, bias, target)
