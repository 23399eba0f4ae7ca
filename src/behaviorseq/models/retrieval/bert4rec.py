"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer
(Sun et al., CIKM 2019).

Follows the paper and the official code (FeiSun/BERT4Rec: modeling.py, run.py, gen_data_fin.py): a
bidirectional post-LN Transformer (x = LN(x + Dropout(sublayer(x))), GELU feed-forward of width 4d),
item plus learned position embeddings followed by LayerNorm and dropout, and the Cloze objective:
random items are replaced by [MASK] (id n_items + 1) and predicted by a GELU dense layer + LayerNorm,
a dot product with the shared item table and an output bias. At test time [MASK] is appended after
the history and its prediction ranks the items.

Masked positions become [MASK] 100% of the time: the official data generator has BERT's 80/10/10
branch but runs it with mask_prob=1.0 (run_*.sh), so it never keeps or randomises a token.

Deviations from the official code, one line each:
- Each real position is masked independently with probability mask_prob (official: exactly
  round(len * p) positions, capped at max_predictions_per_seq).
- A sequence that draws no mask gets its latest item masked, instead of the official extra
  "mask the last item" copy of every sequence; every sequence thus trains at least one position.
- Each training sample is a window from the data pipeline, masked afresh at every step, instead of
  the official 10 pre-generated masked copies (dupe_factor) of each sliding window.
- Sequences are left-padded and positions right-aligned to the table (official: right padding),
  so the appended [MASK] always has position max_len - 1.
- The softmax runs over the items only, not over the padding and [MASK] tokens of the vocabulary.
- Training (configs/bert4rec.yaml): Adam lr 1e-3 with early stopping, not the official AdamW (decay 0.01),
  lr 1e-4, warm-up + linear decay over 400,000 steps; the yaml gives the overrides for the official optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from behaviorseq.config import StrictConfig
from behaviorseq.models import register
from behaviorseq.nn.dropout import Dropout
from behaviorseq.nn.losses import linear_cross_entropy
from behaviorseq.nn.transformer import MultiHeadAttention, PointWiseFFN, attention_mask


class BERT4RecConfig(StrictConfig):
    hidden_size: int = Field(64, gt=0)  # official bert_config_*_64.json (FFN width 4 * hidden_size)
    num_layers: int = Field(2, gt=0)  # official config: num_hidden_layers = 2
    num_heads: int = Field(2, gt=0)  # official config: num_attention_heads = 2
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # official config: hidden and attention dropout 0.2
    max_len: int = Field(50, gt=0)  # official run_*.sh: 200 on MovieLens-1M, 50 on Beauty and Steam
    # The paper's rho; official run_*.sh: 0.2 on MovieLens-1M, 0.4 on Steam, 0.6 on Beauty.
    mask_prob: float = Field(0.2, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BERT4RecConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class _Layer(nn.Module):
    """One post-LN Transformer layer: multi-head self-attention, then the GELU position-wise FFN."""

    def __init__(self, d: int, num_heads: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(d, num_heads, dropout)
        self.attn_dropout = Dropout(dropout)
        self.attn_norm = nn.LayerNorm(d, eps=1e-12)  # eps as in the official TF layer_norm
        self.ffn = PointWiseFFN(d, 4 * d, "gelu", dropout, inner_dropout=0.0)  # BERT: no dropout inside
        self.ffn_norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:  # [B, L, d] -> [B, L or 1, d]
        q = x[:, -1:] if last_only else x  # last_only: the latest position's output alone (keys: all)
        x = self.attn_norm(q + self.attn_dropout(self.attn(q, x, x, mask[:, :, -1:] if last_only else mask)))
        return self.ffn_norm(x + self.ffn(x))


@register("bert4rec")
class BERT4Rec(nn.Module):
    Config = BERT4RecConfig
    padding = "left"  # the latest item sits at position -1
    fields: tuple[str, ...] = ()
    n_negatives = 0

    def __init__(self, cfg: BERT4RecConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        self.mask_token = n_items + 1
        d = cfg.hidden_size
        self.item_emb = nn.Embedding(n_items + 2, d, padding_idx=0)  # items, padding 0 and [MASK]
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.emb_dropout = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(_Layer(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        # Output layer: GELU dense (paper) + LayerNorm (official code), then the shared item table + a bias.
        self.head_dense = nn.Linear(d, d)
        self.head_norm = nn.LayerNorm(d, eps=1e-12)
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1))  # over ids 0..n_items (0 never trained)
        # Official init: truncated normal, std 0.02 (TF truncates at 2 std), zero biases.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
            elif "norm" not in name:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, item: Tensor, last_only: bool = False) -> Tensor:
        """item [B, L] (left-padded, 0 = padding, may hold [MASK]) -> hidden states [B, L, d]; with ``last_only``
        [B, 1, d], the latest position's, the last layer run for that query alone (the same to float rounding)."""
        L, max_len = item.shape[1], self.cfg.max_len
        if L > max_len:
            raise ValueError(f"sequence width {L} exceeds max_len {max_len}")
        pos = torch.arange(max_len - L, max_len, device=item.device)  # [L]
        x = self.emb_dropout(self.emb_norm(self.item_emb(item) + self.pos_emb(pos)))  # [B, L, d]
        mask = attention_mask(item > 0, causal=False)  # [B, 1, L, L] bidirectional over real items
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, last_only and i == len(self.layers) - 1)
        return x  # [B, L, d] or [B, 1, d]

    def head(self, h: Tensor) -> Tensor:
        """The output transform before the tied item table: [..., d] -> [..., d]."""
        return self.head_norm(F.gelu(self.head_dense(h)))

    def logits(self, h: Tensor) -> Tensor:
        """[..., d] -> [..., n_items + 1] over item ids 0..n_items (column 0 is the padding id)."""
        return self.head(h) @ self.item_emb.weight[: self.n_items + 1].T + self.out_bias

    def cloze(self, seq: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """seq [B, L] left-padded -> (input with masked items replaced by [MASK], labels: the original
        item at masked positions, else 0). Padding is never masked; a non-empty sequence that drew no
        mask gets its latest item (position -1) masked."""
        real = seq > 0  # [B, L]
        draw = torch.rand(seq.shape, device=seq.device, generator=generator) < self.cfg.mask_prob
        masked = draw & real  # [B, L]
        masked[:, -1] |= ~masked.any(1) & real[:, -1]
        inp = torch.where(masked, torch.full_like(seq, self.mask_token), seq)
        return inp, torch.where(masked, seq, torch.zeros_like(seq))

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Cloze loss: cross-entropy over all items at the masked positions (the paper's NLL).

        Randomness comes from torch's global RNG (seeded and checkpointed by the trainer), or from
        ``generator``.
        """
        item, target = batch["item"], batch["target"]  # [B, L] shifted view, left-padded, L <= max_len
        # The whole sequence is the inputs then the final target (``target`` alone would lose the first
        # item); its last max_len items, so only a window already max_len wide loses its oldest item.
        last = target[:, None] if target.dim() == 1 else target[:, -1:]  # one target a row (prefix windows) or shifted
        seq = torch.cat([item, last], 1)[:, -self.cfg.max_len:]  # [B, L'] L' = min(L + 1, max_len)
        inp, labels = self.cloze(seq, generator)
        h = self.encode(inp)  # [B, L', d]
        at = labels > 0  # [B, L']
        items = slice(1, self.n_items + 1)  # the logits over items 1..n only: never the padding id
        return linear_cross_entropy(self.head(h[at]), self.item_emb.weight[items], labels[at] - 1, self.out_bias[items])

    def score(self, batch: dict[str, Tensor]) -> Tensor:
        item = batch["item"]  # [B, L] left-padded history, L <= max_len
        mask = torch.full_like(item[:, :1], self.mask_token)  # [B, 1]
        # History then [MASK], cut to max_len: a full window gives up its oldest item for the [MASK].
        inp = torch.cat([item, mask], 1)[:, -self.cfg.max_len:]  # [B, min(L + 1, max_len)]
        h = self.encode(inp, last_only=True)[:, 0]  # [B, d] at the appended [MASK]
        return self.logits(h)  # [B, n_items + 1]
