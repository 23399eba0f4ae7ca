"""Multi-field payment encoder shared by LBSF and its flat baselines (LBSF brief section 2, "Multi-field
encoder"): one d-vector per payment from merchant name, description, amount and time.

- Text (merchant name, description): hashed character n-grams (``hash_char_ngrams``, computed once per
  distinct string, i.e. an offline cache), mean-pooled by an ``EmbeddingBag``; each forward pools only the
  distinct strings of its batch, once each, and gathers (the whole vocabulary per batch cost 1 s a step at
  100k descriptions).
- Amount: log1p, quantile buckets (edges from training data) -> embedding, plus the standardised scalar.
- Time: embeddings of the day index before the label date (recency), hour of day and day of week, plus
  a sinusoid of log1p(dt since the previous payment of the same merchant slot; in the pooled "rest" slot
  that payment may be another merchant's) with a "first payment" flag.
- Fusion: concatenate, then a 2-layer MLP to d.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.transformer import MultiHeadAttention, PointWiseFFN, attention_mask

PAYMENT_FIELDS = ("merchant", "description", "amount", "days_before", "hour", "dow", "dt_prev")


def hash_char_ngrams(strings: list[str], n_buckets: int, ns: tuple[int, ...] = (2, 3),
                     max_grams: int = 48) -> np.ndarray:
    """Hashed char n-gram ids of each string: int64 [len(strings), max_grams], ids in ``1..n_buckets-1``,
    0 = padding; the first ``max_grams`` n-grams are kept (about three words: strings that differ only after
    that hash alike; 33 of 901 synthetic descriptions reach the cap). Words are padded with spaces (``" ab "``); crc32
    makes the hash stable across runs.
    A loop over distinct strings (a vocabulary), never over payments."""
    if n_buckets < 2:
        raise ValueError(f"hash_char_ngrams: n_buckets must be >= 2, got {n_buckets}")
    out = np.zeros((len(strings), max_grams), dtype=np.int64)
    for i, s in enumerate(strings):
        grams = []
        for w in str(s).lower().split():
            w = f" {w} "
            grams += [w[j:j + n] for n in ns for j in range(len(w) - n + 1)]
        ids = [1 + zlib.crc32(g.encode()) % (n_buckets - 1) for g in grams[:max_grams]]
        out[i, :len(ids)] = ids
    return out


def amount_edges(amount: np.ndarray, n_buckets: int) -> np.ndarray:
    """Quantile edges of log1p(amount) for ``n_buckets`` buckets (fit on training payments only)."""
    la = np.log1p(np.asarray(amount, dtype=np.float64))
    return np.unique(np.quantile(la, np.linspace(0, 1, n_buckets + 1)[1:-1])) if la.size else np.zeros(1)


def require_fields(batch: dict, names: tuple[str, ...], model: str) -> None:
    missing = [k for k in names if k not in batch]
    if missing:
        raise KeyError(f"{model}: batch lacks field(s) {missing}; it reads {list(names)}")


class PaymentFieldEncoder(nn.Module):
    """fields name -> [...] tensors (``PAYMENT_FIELDS``) -> [..., d]."""

    def __init__(self, merchant_ngrams: np.ndarray, description_ngrams: np.ndarray, edges: np.ndarray,
                 d: int, n_hash: int, max_days: int, n_freq: int = 8):
        super().__init__()
        self.register_buffer("merchant_ngrams", torch.as_tensor(merchant_ngrams, dtype=torch.long))
        self.register_buffer("description_ngrams", torch.as_tensor(description_ngrams, dtype=torch.long))
        self.register_buffer("edges", torch.as_tensor(edges, dtype=torch.float32))
        self.register_buffer("freq", torch.exp(torch.linspace(0, math.log(64.0), n_freq)))
        self.text = nn.EmbeddingBag(n_hash, d, mode="mean", padding_idx=0)
        self.amount_bucket = nn.Embedding(len(edges) + 1, d)
        self.day = nn.Embedding(max_days + 1, d)
        self.hour = nn.Embedding(24, d)
        self.dow = nn.Embedding(7, d)
        self.max_days = max_days
        n_in = 6 * d + 2 + 2 * n_freq + 1
        self.fuse = nn.Sequential(nn.Linear(n_in, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.LayerNorm(d))

    def pooled_text(self, ids: Tensor, ngrams: Tensor) -> Tensor:
        """Text vectors [..., d] of string ids [...]: each distinct id of the batch pooled once, then gathered."""
        uniq, inverse = torch.unique(ids, return_inverse=True)
        return self.text(ngrams[uniq])[inverse]

    def forward(self, f: dict) -> Tensor:
        la = torch.log1p(f["amount"].float())  # [...]
        dt = f["dt_prev"].float()
        first = (dt < 0).float()
        ang = torch.log1p(dt.clamp(min=0))[..., None] * self.freq  # [..., n_freq]
        parts = [
            self.pooled_text(f["merchant"], self.merchant_ngrams),
            self.pooled_text(f["description"], self.description_ngrams),
            self.amount_bucket(torch.bucketize(la, self.edges)),
            self.day(f["days_before"].floor().long().clamp(0, self.max_days)),
            self.hour(f["hour"]), self.dow(f["dow"]),
            ((la - 3.0) / 2.0)[..., None], (f["days_before"].float() / self.max_days)[..., None],
            torch.sin(ang), torch.cos(ang), first[..., None],
        ]
        return self.fuse(torch.cat(parts, dim=-1))


class Block(nn.Module):
    """Pre-LayerNorm Transformer encoder block; ``valid`` [B, L] masks padding keys."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, heads, dropout)
        self.ffn = PointWiseFFN(d, 2 * d, "gelu", dropout, 0.0)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:  # [B, L, d], [B, L] -> [B, L, d]
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, h, attention_mask(valid, causal=False)))
        return x + self.ffn.net(self.ln2(x))


class AttentionPool(nn.Module):
    """Masked attention pooling: softmax(w^T tanh(W x)) over valid positions. [B, L, d] -> [B, d]."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        s = self.score(x).squeeze(-1)
        s = s.masked_fill(~valid, max(-1e9, torch.finfo(s.dtype).min))  # [B, L]; fp16 autocast cannot hold -1e9
        w = torch.softmax(s, dim=-1) * valid.any(dim=-1, keepdim=True)  # an all-padding row pools to 0
        return torch.einsum("bl,bld->bd", w, x)


class BinaryRiskModel(nn.Module):
    """The risk models' shared contract (``models.risk``): ``forward(batch) -> logits [B]``, ``score`` the same,
    ``loss`` BCE with ``cfg.pos_weight`` on the default class; ``label`` defaults to ``batch["label"]``."""

    def score(self, batch: dict) -> Tensor:
        """Default logits [B] (the same as ``forward``)."""
        return self(batch)

    def loss(self, batch: dict, label: Tensor | None = None) -> Tensor:
        label = batch["label"] if label is None else label
        pw = torch.tensor(self.cfg.pos_weight, device=label.device)
        return F.binary_cross_entropy_with_logits(self(batch), label.float(), pos_weight=pw)
