"""Pieces shared by the Transformer sequence models (SASRec, BERT4Rec): the attention mask, multi-head
attention and the point-wise feed-forward network. Torch only; masks are built on the input's device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import behaviorseq.nn.dropout as _dropout
from behaviorseq.nn.dropout import Dropout


def attention_mask(valid: Tensor, causal: bool) -> Tensor:
    """Boolean mask [B, 1, L, L], True where query i may attend to key j.

    ``valid`` [B, L] marks real (non-padding) positions; a padding key is never attended to, so the
    amount of padding cannot change a real position's output. With ``causal``, query i sees keys
    j <= i only. Every query may attend to itself: a padding query would otherwise have no key left
    and give NaN (its output is discarded by the models).
    """
    L = valid.shape[1]
    allowed = valid[:, None, None, :]  # [B, 1, 1, L]
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()  # [B, 1, L, L]
    return allowed | torch.eye(L, dtype=torch.bool, device=valid.device)  # [B, 1, L, L]


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)``; with p > 0 on CPU
    (where SDPA's math path drops the weights with ``bernoulli_``) the same math with ``nn.dropout.dropout``."""
    if p == 0.0 or not _dropout.RAND_MASK or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # [..., Lq, Lk]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return _dropout.dropout(torch.softmax(scores, -1), p) @ v


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``num_heads`` heads (Vaswani et al. 2017, Eq. 1 and the
    multi-head form), with dropout on the attention weights.

    The projections are one fused ``in_proj_weight`` [3d, d] as in ``torch.nn.MultiheadAttention``,
    so that a model re-initialising matrices (SASRec's xavier loop) draws them with the same fan as
    the reference implementations that use that module. Query and key/value inputs may differ.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, output_projection: bool = True):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * hidden_size))
        # without it the heads' outputs are only concatenated (EasyTPP's THP layout)
        self.out_proj = nn.Linear(hidden_size, hidden_size) if output_projection else nn.Identity()
        # torch.nn.MultiheadAttention's own initialisation.
        nn.init.xavier_uniform_(self.in_proj_weight)
        if output_projection:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:
        """query [B, Lq, d], key/value [B, Lk, d], mask [B, 1, Lq, Lk] (True = attend) -> [B, Lq, d]."""
        B, Lq, d = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def heads(x: Tensor) -> Tensor:  # [B, L, d] -> [B, H, L, d / H]
            return x.view(B, x.shape[1], self.num_heads, d // self.num_heads).transpose(1, 2)

        q = heads(F.linear(query, w_q, b_q))  # [B, H, Lq, d / H]
        k, v = heads(F.linear(key, w_k, b_k)), heads(F.linear(value, w_v, b_v))  # [B, H, Lk, d / H]
        p = self.dropout if self.training else 0.0
        out = attention(q, k, v, mask, p)  # [B, H, Lq, d / H]; SDPA, or its math with a cheap CPU dropout
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, d))  # [B, Lq, d]


class PointWiseFFN(nn.Module):
    """Position-wise feed-forward network: Linear -> activation -> dropout -> Linear -> dropout.

    ``inner_dropout`` is the dropout after the activation (SASRec uses it, BERT does not); the
    residual connection and the LayerNorm belong to the block that uses it.
    """

    def __init__(self, hidden_size: int, inner_size: int, activation: str, dropout: float,
                 inner_dropout: float):
        super().__init__()
        acts = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.net = nn.Sequential(
            nn.Linear(hidden_size, inner_size), acts[activation](), Dropout(inner_dropout),
            nn.Linear(inner_size, hidden_size), Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, L, d] -> [B, L, d]
        return self.net(x)
